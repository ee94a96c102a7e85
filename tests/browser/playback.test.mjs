// Recording and playback in Chromium, through the all-in-one default: the moderator's page
// presses Record, everyone's page shows the recording badge, the moderator presses Stop, and a
// page at /r/<meeting> plays a participant's file and seeks in it (HTTP range requests).
//
//   cd tests/browser && KASKADE_URL=http://127.0.0.1:8080 node --test playback.test.mjs
//
// Machine-readable line: PLAYBACK seek_to=<s> landed=<s> duration=<s>
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, sleep, waitFor } from './helpers.mjs';

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MEETING = `rp-${randomBytes(4).toString('hex')}`;
const RECORD_MS = 6_000;

describe('record a meeting and play it back', { timeout: 150_000 }, () => {
  let browser;
  let close = async () => {};
  before(async () => { ({ browser, close } = await launchBrowser()); });
  after(async () => { await close(); });

  it('the moderator records, and the recording plays and seeks', { timeout: 120_000 }, async () => {
    const people = [];
    for (const name of ['Paula', 'Pete']) {
      const who = await Participant.open(browser, name);
      await who.goto(BASE_URL, MEETING);
      // one after the other: the first one in is the moderator
      await waitFor(`${name} is welcomed`, async () => (await who.state()).you, Boolean,
        { timeout: 30_000 });
      people.push(who);
    }
    const [paula] = people;
    for (const who of people) {
      await waitFor(`${who.name} decodes the other`, () => who.framesFromOnlyOther(), (n) => n > 10,
        { timeout: 30_000 });
    }
    assert.equal((await paula.state()).you.role, 'moderator', 'the first in an open meeting moderates');
    const recordClicked = Date.now();
    await paula.page.click('#btn-record');
    for (const who of people) {
      await waitFor(`${who.name} sees the recording badge`, async () => {
        const st = await who.state();
        return st.recording || `not yet; status: ${st.status}`;
      }, (v) => v === true, { timeout: 15_000 });
      assert.equal(await who.page.isVisible('#rec-badge'), true);
    }
    await sleep(RECORD_MS);
    await paula.page.click('#btn-record');
    for (const who of people) {
      await waitFor(`${who.name}'s badge goes away`, async () => (await who.state()).recording,
        (on) => on === false, { timeout: 15_000 });
    }
    const stopSeen = Date.now();

    const viewer = await Participant.open(browser, 'Viewer');
    const list = async () => {
      await viewer.page.goto(`${BASE_URL}/r/${MEETING}`, { waitUntil: 'load' });
      await viewer.page.waitForFunction(() => window.kaskadeRecordings !== undefined, null, { timeout: 10_000 });
      return viewer.page.evaluate(() => window.kaskadeRecordings);
    };
    const recordings = await waitFor('the recording is finished', list,
      (r) => r.length === 1 && r[0].state === 'done', { timeout: 30_000, interval: 500 });
    assert.equal(recordings[0].participants.length, 2);

    const video = viewer.page.locator('video').first();
    await video.evaluate((v) => { v.muted = true; return v.play(); });
    await waitFor('the file plays', () => video.evaluate((v) => v.currentTime), (t) => t > 1,
      { timeout: 20_000 });
    const size = await video.evaluate((v) => [v.videoWidth, v.videoHeight]);
    assert.ok(size[0] > 0 && size[1] > 0, `a picture: ${size}`);
    const duration = await video.evaluate((v) => v.duration);
    // The file covers at least the time both pages showed the badge (less the first keyframe's
    // wait) and at most the time from the Record click to both pages seeing it stop: how long
    // the badge took to appear depends on the machine, not on kaskade.
    const longest = (stopSeen - recordClicked) / 1000 + 0.5;
    assert.ok(duration > RECORD_MS / 1000 - 1 && duration < longest,
      `duration ${duration}, recorded for ${RECORD_MS / 1000} s of a ${longest - 0.5} s window`);

    const target = 4;
    const landed = await video.evaluate((v, to) => new Promise((resolve, reject) => {
      v.addEventListener('seeked', () => resolve(v.currentTime), { once: true });
      v.addEventListener('error', () => reject(new Error(`media error ${v.error && v.error.code}`)), { once: true });
      v.currentTime = to;
    }), target);
    console.log(`PLAYBACK seek_to=${target} landed=${landed.toFixed(2)} duration=${duration.toFixed(2)}`);
    assert.ok(Math.abs(landed - target) < 0.5, `seeked to ${landed}`);
    await waitFor('it plays on after the seek', () => video.evaluate((v) => v.currentTime),
      (t) => t > landed + 0.3, { timeout: 10_000 });
  });
});
