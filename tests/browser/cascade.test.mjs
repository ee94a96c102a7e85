// Cascading and failover in real browsers: a locator and three nodes that carry one
// participant each. Two Chromium pages of one meeting land on two nodes and see each other
// across the link; then the Rust wrapper (tests/tests/browser.rs) kills the first page's node
// with SIGKILL when this script prints `NODE_MAY_DIE <name>`, and that page must come back on
// the third node by itself, decoding the other again within 5 s.
//
//   cd tests/browser && KASKADE_URL=http://LOCATOR node --test cascade.test.mjs
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, waitFor } from './helpers.mjs';

const FAILOVER_BUDGET_MS = 5_000;
const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MEETING = `cc-${randomBytes(4).toString('hex')}`;

const API_KEY = process.env.KASKADE_API_KEY;
const operator = { authorization: `Bearer ${API_KEY}` };

async function nodesUp() {
  const response = await fetch(`${BASE_URL}/api/nodes`, { headers: operator });
  return response.ok ? (await response.json()).length : 0;
}

/** A token from the operator's token endpoint, as a backend would get one. */
async function token(identity) {
  const response = await fetch(`${BASE_URL}/api/tokens`, {
    method: 'POST',
    headers: { ...operator, 'content-type': 'application/json' },
    body: JSON.stringify({ meeting: MEETING, identity, name: identity }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).token;
}

/**
 * Nora's simulcast layers cross the link as separate streams and the far node picks among them
 * for Nils: his tile of her takes the layer that fills it, and her browser sends only that one
 * (nobody on her own node watches her, so the far node's subscription alone decides).
 */
async function eachLayerCrossesTheLinkAsNeeded(nora, nils) {
  const noraId = (await nora.state()).you.id;
  // her fake camera gives 640x480: she sends that and 320x240 (Chromium drops a third layer of
  // a picture this size); once Nils's large tile settled, the full-size one alone
  const largest = 480;
  await waitFor('Nora sending her full-size layer alone', () => nora.outboundVideo(),
    (o) => o && o.layers.length === 1 && o.frameHeight === largest && o.paused.length > 0,
    { timeout: 20_000 });
  for (const [what, width, height] of [['small', '120px', largest / 2], ['large', '', largest]]) {
    // set again at each look: the grid may lay its tiles out anew meanwhile
    await waitFor(`Nils decoding Nora at ${height} px (${what}) across the link`, async () => {
      await nils.setTileWidth(noraId, width);
      return nils.videoFrom(noraId);
    }, (r) => r && r.frameHeight === height, { timeout: 15_000 });
    const now = await waitFor(`Nora sending her ${height} px layer alone`, () => nora.outboundVideo(),
      (o) => o && o.layers.length === 1 && o.frameHeight === height, { timeout: 10_000 });
    console.log(`CROSSING ${what} nils_sees=${height} nora_sends=${JSON.stringify(now.layers)} ` +
      `paused=${now.paused}`);
  }
}

describe('a meeting across nodes', { timeout: 150_000 }, () => {
  let browser;
  let close = async () => {};
  before(async () => { ({ browser, close } = await launchBrowser()); });
  after(async () => { await close(); });

  it('pages on two nodes see each other, and one survives its node', { timeout: 120_000 }, async () => {
    await waitFor('three nodes registered', nodesUp, (n) => n === 3, { timeout: 30_000 });
    const people = [];
    for (const name of ['Nora', 'Nils']) {
      const who = await Participant.open(browser, name);
      await who.goto(BASE_URL, MEETING, await token(name));
      await waitFor(`${name} joined`, async () => (await who.state()).node, Boolean, { timeout: 30_000 });
      people.push(who);
    }
    const [nora, nils] = people;
    const first = (await nora.state()).node;
    const second = (await nils.state()).node;
    assert.notEqual(first, second, 'one participant per node: the meeting cascades');
    for (const who of people) {
      await waitFor(`${who.name} decodes the other across the link`, () => who.framesFromOnlyOther(),
        (n) => n > 10, { timeout: 30_000 });
    }
    await eachLayerCrossesTheLinkAsNeeded(nora, nils);
    console.log(`NODE_MAY_DIE ${first}`);
    const lost = Date.now();
    await waitFor('Nora is on another node', async () => (await nora.state()).node,
      (node) => node && node !== first, { timeout: 30_000, interval: 50 });
    // Nora's page has a fresh peer connection now; Nils's keeps its slot for her
    const nilsBefore = await nils.framesFromOnlyOther();
    await waitFor('Nora decodes Nils again', async () => ((await nora.state()).reconnects === 1
      ? nora.framesFromOnlyOther() : 0), (n) => n > 0, { timeout: 30_000, interval: 50 });
    await waitFor('Nils decodes Nora again', () => nils.framesFromOnlyOther(),
      (n) => n > nilsBefore, { timeout: 30_000, interval: 50 });
    const resumed = Date.now() - lost;
    console.log(`FAILOVER_TO_FIRST_FRAME_MS ${resumed}`);
    assert.ok(resumed < FAILOVER_BUDGET_MS, `back only after ${resumed} ms`);
    const third = (await nora.state()).node;
    assert.notEqual(third, second, 'the third node, since the second is full');
    assert.equal((await nora.state()).reconnects, 1);
    const navigations = await nora.page.evaluate(() => performance.getEntriesByType('navigation').length);
    assert.equal(navigations, 1, 'no page reload');
  });
});
