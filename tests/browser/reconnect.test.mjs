// Automatic reconnect: two Chromium participants are in a call when the node dies. The Rust
// wrapper (tests/tests/browser.rs) restarts it on the same address when this script prints
// NODE_MAY_RESTART; the pages must rejoin by themselves, through the join API, and decode each
// other again within the failover budget.
//
//   cd tests/browser && KASKADE_URL=http://127.0.0.1:8080 node --test reconnect.test.mjs
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, waitFor } from './helpers.mjs';

/** Issue 3: participants of a lost node are back, receiving, within 5 s. */
const FAILOVER_BUDGET_MS = 5_000;

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MEETING = `rc-${randomBytes(4).toString('hex')}`;

/** How many `welcome` frames the page has received (one per successful join). */
function welcomes(who) {
  return who.page.evaluate(() => window.kaskade.frames.filter((f) => f.type === 'welcome').length);
}

describe('reconnect after the node dies', { timeout: 150_000 }, () => {
  let browser;
  let close = async () => {};
  before(async () => { ({ browser, close } = await launchBrowser()); });
  after(async () => { await close(); });

  it('both pages rejoin and see each other again without a reload', { timeout: 120_000 }, async () => {
    const people = [];
    for (const name of ['Rita', 'Rick']) {
      const who = await Participant.open(browser, name);
      await who.goto(BASE_URL, MEETING);
      people.push(who);
    }
    for (const who of people) {
      await waitFor(`${who.name} decodes the other`, () => who.framesFromOnlyOther(), (n) => n > 10,
        { timeout: 30_000 });
      assert.equal(await welcomes(who), 1);
      const st = await who.state();
      assert.ok(st.node, `${who.name} knows its node from the join API`);
      assert.equal(st.reconnects, 0);
    }
    const nodes = await Promise.all(people.map(async (who) => (await who.state()).node));
    console.log('NODE_MAY_RESTART');
    const lost = Date.now();
    for (const who of people) {
      await waitFor(`${who.name} is welcomed by the restarted node`, () => welcomes(who),
        (n) => n >= 2, { timeout: 60_000, interval: 50 });
      await waitFor(`${who.name} decodes the other again`, () => who.framesFromOnlyOther(),
        (n) => n > 0, { timeout: 30_000, interval: 50 });
      const resumed = Date.now() - lost;
      console.log(`RECONNECT_TO_FIRST_FRAME_MS ${who.name} ${resumed}`);
      assert.ok(resumed < FAILOVER_BUDGET_MS, `${who.name} decoded again only after ${resumed} ms`);
      await waitFor(`${who.name} keeps decoding the other`, () => who.framesFromOnlyOther(),
        (n) => n > 10, { timeout: 30_000 });
    }
    for (const [i, who] of people.entries()) {
      const st = await who.state();
      assert.equal(st.reconnects, 1, `${who.name} rejoined once`);
      assert.equal(st.node, nodes[i], 'the restarted node keeps its name');
    }
    const navigations = await people[0].page.evaluate(() => performance.getEntriesByType('navigation').length);
    assert.equal(navigations, 1, 'no page reload');
  });
});
