// ICE-TCP: with UDP to the node blocked (the Rust wrapper installs an nftables rule in the
// test's network namespace), two Chromium participants still meet, over RFC 4571 framed TCP.
//
//   cd tests/browser && KASKADE_URL=http://127.0.0.1:8080 node --test ice_tcp.test.mjs
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, waitFor } from './helpers.mjs';

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MEETING = `tcp-${randomBytes(4).toString('hex')}`;

/** The protocol of the page's selected ICE candidate pair (its local candidate). */
function selectedProtocol(who) {
  return who.page.evaluate(async () => {
    const stats = await window.kaskade.pc.getStats();
    let pairId = null;
    stats.forEach((s) => { if (s.type === 'transport') pairId = s.selectedCandidatePairId; });
    const pair = pairId && stats.get(pairId);
    const local = pair && stats.get(pair.localCandidateId);
    return local ? local.protocol : null;
  });
}

describe('ICE-TCP when UDP is blocked', { timeout: 120_000 }, () => {
  let browser;
  let close = async () => {};
  before(async () => { ({ browser, close } = await launchBrowser()); });
  after(async () => { await close(); });

  it('two participants decode each other over TCP', { timeout: 90_000 }, async () => {
    const people = [];
    for (const name of ['Tess', 'Tom']) {
      const who = await Participant.open(browser, name);
      await who.goto(BASE_URL, MEETING);
      people.push(who);
    }
    for (const who of people) {
      const frames = await waitFor(`${who.name} decodes the other over TCP`,
        () => who.framesFromOnlyOther(), (n) => n > 20, { timeout: 30_000 });
      assert.ok(frames > 20);
      assert.equal(await selectedProtocol(who), 'tcp');
    }
  });
});
