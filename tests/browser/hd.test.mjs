// End-to-end test of simulcast from a 1280x720 camera in headless Chromium against a running
// kaskade node: Alice's camera is a 720p y4m file (Chromium's fake capture), she picks
// 1280x720 in the web client and sends three layers (1280x720, 640x360, 320x180); Bob shows
// her in a large tile, a middle one and a small one, and decodes the layer that fills each.
//
//   cd tests/browser && KASKADE_URL=http://127.0.0.1:8080 KASKADE_CAMERA_Y4M=/tmp/720p.y4m \
//     node --test hd.test.mjs
//
// It starts no server (see meeting.test.mjs). Machine-readable lines:
//   SIMULCAST_720 sent=<rid:WxH,...> first_top_ms=<ms> to_<size>_ms=<ms> <size>_frozen_ms=<ms> ...
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, stepper, show, sleep, waitFor } from './helpers.mjs';

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MEETING = process.env.KASKADE_MEETING || `hd-${randomBytes(4).toString('hex')}`;
const CAMERA = process.env.KASKADE_CAMERA_Y4M;
const STEP_TIMEOUT = 90_000;

describe(`kaskade 720p simulcast ${MEETING} at ${BASE_URL}`, { timeout: 3 * STEP_TIMEOUT }, () => {
  let closeBrowser = async () => {};
  let browser;
  const p = {};
  let everyone = [];

  before(async () => {
    assert.ok(CAMERA, 'KASKADE_CAMERA_Y4M names the 720p camera file');
    ({ browser, close: closeBrowser } = await launchBrowser({
      args: [`--use-file-for-fake-video-capture=${CAMERA}`],
    }));
  });

  after(async () => {
    await closeBrowser();
  });

  const step = stepper(it, STEP_TIMEOUT, () => everyone);

  step('1. Alice sends her 720p camera in three layers; Bob decodes the top one in a large tile', async () => {
    for (const name of ['Alice', 'Bob']) {
      const who = await Participant.open(browser, name);
      p[name] = who;
      everyone.push(who);
      await who.goto(BASE_URL, MEETING);
      const you = await waitFor(`${name} to be welcomed`, async () => (await who.state())?.you,
        (v) => v && v.id !== undefined && v.id !== null, { timeout: 15_000 });
      who.id = you.id;
    }
    // Bob sends no video: the machine encodes one 720p camera, not two
    await p.Bob.page.click('#btn-video');
    await p.Alice.page.selectOption('#sel-bitrate', '1440');
    await p.Alice.page.selectOption('#sel-resolution', '1280x720');
    // this 2-core machine cannot encode 720p in three layers in real time beside everything
    // else, and Chromium would scale the layers down (960x540, ...); a camera track hinted as
    // detail keeps its resolution and gives up frame rate instead
    await p.Alice.page.evaluate(() => {
      const sender = window.kaskade.pc.getSenders().find((s) => s.track && s.track.kind === 'video');
      sender.track.contentHint = 'detail';
    });
    const started = Date.now();
    await p.Bob.setTileWidth(p.Alice.id, '1280px');
    const fromAlice = () => p.Bob.videoFrom(p.Alice.id);
    const top = await waitFor("Bob decoding Alice's 1280x720 layer", fromAlice,
      (r) => r && r.frameHeight === 720, { timeout: 30_000 });
    const firstTopMs = Date.now() - started;
    // she sends every layer Chromium makes of 720p once Bob's smaller tiles ask for them
    const sent = await p.Alice.outboundVideo();
    assert.equal(sent.frameWidth, 1280, `Alice's largest layer: ${show(sent)}`);
    await sleep(1_500);
    const settled = await fromAlice();
    assert.ok(settled.framesDecoded > top.framesDecoded + 10, `Bob keeps decoding: ${show(settled)}`);
    assert.equal(settled.frameHeight, 720, 'Bob stays on the top layer');
    p.firstTopMs = firstTopMs;
  }, { essential: true });

  step('2. Bob shows Alice at 640x360 and 320x180 and back: each tile gets the layer that fills it', async () => {
    const fromAlice = () => p.Bob.videoFrom(p.Alice.id);
    const measure = async (width, height) => {
      const before = await fromAlice();
      const started = Date.now();
      await p.Bob.setTileWidth(p.Alice.id, width);
      const reached = await waitFor(`Bob decoding Alice at ${height} px`, fromAlice,
        (r) => r && r.frameHeight === height, { timeout: 15_000 });
      const ms = Date.now() - started;
      await sleep(1_500);
      const settled = await fromAlice();
      assert.ok(settled.framesDecoded > reached.framesDecoded + 10, `Bob keeps decoding: ${show(settled)}`);
      assert.equal(settled.frameHeight, height, `Bob stays on the ${height} px layer`);
      const frozenMs = Math.round(1000 * ((settled.totalFreezesDuration ?? 0) - (before.totalFreezesDuration ?? 0)));
      const freezes = (settled.freezeCount ?? 0) - (before.freezeCount ?? 0);
      const fps = Math.round((settled.framesDecoded - reached.framesDecoded) / 1.5);
      return { ms, frozenMs, freezes, fps, alice: await p.Alice.outboundVideo() };
    };
    // a tile 400 px wide is 300 px tall: the 640x360 layer fills it; 160 px wide, 120 px tall:
    // the 320x180 one
    const middle = await measure('400px', 360);
    const small = await measure('160px', 180);
    const large = await measure('1280px', 720);
    const layers = [middle, small, large].flatMap((m) => m.alice.layers)
      .map((l) => `${l.rid}:${l.frameWidth}x${l.frameHeight}`);
    console.log(`SIMULCAST_720 sent=${[...new Set(layers)].join(',')} first_top_ms=${p.firstTopMs} ` +
      `to_360_ms=${middle.ms} 360_frozen_ms=${middle.frozenMs} to_180_ms=${small.ms} ` +
      `180_frozen_ms=${small.frozenMs} to_720_ms=${large.ms} 720_frozen_ms=${large.frozenMs} ` +
      `fps=${[middle, small, large].map((m) => m.fps).join('/')} freezes=${[middle, small, large].map((m) => m.freezes).join('/')}`);
    assert.deepEqual(small.alice.layers.map((l) => l.frameHeight), [180],
      `Alice sends only the layer Bob receives: ${show(small.alice)}`);
    for (const [what, m] of [['360', middle], ['180', small]]) {
      assert.ok(m.frozenMs < 500, `the switch to ${what} froze Bob's picture for ${m.frozenMs} ms`);
    }
    // going up starts Alice's paused 720p encoder, which on this machine encodes 11-16 frames a
    // second once started, and Chromium counts the drop from 30 as a freeze: within one
    // keyframe interval is the goal (issue 13, item 3)
    assert.ok(large.frozenMs < 1_000, `the switch to 720 froze Bob's picture for ${large.frozenMs} ms`);
  });
});
