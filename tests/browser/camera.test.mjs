// An RTSP camera added from the web client, in headless Chromium against a running kaskade
// (the all-in-one) and a running RTSP camera (tests/rtsp/camera.py), in one network namespace:
//
//   KASKADE_URL=http://127.0.0.1:8080 KASKADE_CAMERA_URL=rtsp://127.0.0.1:8554/cam \
//     node --test camera.test.mjs
//
// The first participant (the moderator) opens "Add camera", is told clearly when the URL is
// wrong, adds the camera, and decodes its video in a tile that names it and says it is a camera;
// a second participant who joins later decodes it at once (the camera should send a keyframe
// only every 10 s, camera.py --gop 150, so that this shows the node's cached group of pictures).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, waitFor } from './helpers.mjs';

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const CAMERA_URL = process.env.KASKADE_CAMERA_URL || 'rtsp://127.0.0.1:8554/cam';
const MEETING = `camera-${randomBytes(4).toString('hex')}`;

describe(`an RTSP camera in meeting ${MEETING}`, { timeout: 120_000 }, () => {
  let browser;
  let closeBrowser = async () => {};
  let alice;

  before(async () => {
    ({ browser, close: closeBrowser } = await launchBrowser());
  });

  after(async () => {
    if (alice) console.log(await alice.diagnostics());
    await closeBrowser();
  });

  it('a moderator adds a camera and everyone sees it', { timeout: 100_000 }, async () => {
    alice = await Participant.open(browser, 'Alice');
    await alice.goto(BASE_URL, MEETING);
    const you = await waitFor('Alice to be welcomed', async () => (await alice.state())?.you,
      (v) => v && v.role === 'moderator', { timeout: 15_000 });
    alice.id = you.id;
    const page = alice.page;
    await page.locator('#btn-camera').click();
    assert.ok(await page.locator('#camera-dialog').isVisible(), 'the dialog opens');

    // a camera that is not there: the dialog says why and stays open
    const closedPort = new URL(CAMERA_URL);
    closedPort.port = '9';
    await page.locator('#camera-url').fill(closedPort.toString());
    await page.locator('#camera-add').click();
    const error = await waitFor('the dialog to show why the camera was refused',
      () => page.locator('#camera-error').textContent(), (t) => /cannot reach the camera/.test(t || ''),
      { timeout: 20_000 });
    console.log(`CAMERA_REFUSED ${error}`);
    assert.ok(await page.locator('#camera-dialog').isVisible(), 'the dialog stays open');

    // the real one
    await page.locator('#camera-url').fill(CAMERA_URL);
    await page.locator('#camera-name').fill('Board room');
    const added = Date.now();
    await page.locator('#camera-add').click();
    await waitFor('the dialog to close once the camera is in',
      () => page.locator('#camera-dialog').isVisible(), (v) => v === false, { timeout: 20_000 });
    const camera = await waitFor('the camera in the participant list',
      async () => Object.values((await alice.state()).participants).find((p) => p.source),
      Boolean, { timeout: 10_000 });
    assert.equal(camera.name, 'Board room');
    assert.equal(camera.source.kind, 'camera');
    const frames = await waitFor('the camera\'s video decoded in Chromium',
      async () => (await alice.stats())[camera.id]?.framesDecoded ?? 0, (n) => n >= 30,
      { timeout: 30_000 });
    console.log(`CAMERA_FIRST_FRAMES frames=${frames} ms_since_add=${Date.now() - added}`);
    const badge = alice.tile(camera.id).locator('.source-badge');
    assert.equal((await badge.textContent()).trim(), 'Camera');
    assert.ok(await badge.isVisible(), 'the tile says it is a camera');
    assert.equal(await alice.tile(camera.id).locator('.name').textContent(), 'Board room');

    // someone who joins later sees the camera at once, though the camera sends a keyframe
    // only every 10 s: the node replays its cached group of pictures
    const bob = await Participant.open(browser, 'Bob');
    const joined = Date.now();
    await bob.goto(BASE_URL, MEETING);
    const bobFrames = await waitFor('Bob decoding the camera before its next keyframe',
      async () => (await bob.stats())[camera.id]?.framesDecoded ?? 0, (n) => n >= 1,
      { timeout: 5_000, interval: 50 });
    console.log(`CAMERA_LATE_VIEWER_FIRST_FRAME ms_since_navigation=${Date.now() - joined}`);
    assert.ok(bobFrames >= 1);
    const later = await waitFor('Bob decoding the camera steadily',
      async () => (await bob.stats())[camera.id]?.framesDecoded ?? 0, (n) => n >= bobFrames + 20,
      { timeout: 10_000 });
    assert.ok(later > bobFrames);
    await bob.context.close();
  });
});
