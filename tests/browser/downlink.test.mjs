// A subscriber behind a capped downlink, in headless Chromium against a running kaskade node:
// the node's estimate of Bob's downlink (from his browser's transport-wide congestion
// feedback) makes it send him the simulcast layers that fit, while Carol, on an open link,
// keeps Alice's top layer; when the cap lifts, Bob gets the top layer back; behind 1 Mbit/s he
// keeps it.
//
//   KASKADE_URL=http://10.77.0.1:PORT KASKADE_FAR_NETNS=<ns> KASKADE_CAP_DEVICE=<dev> \
//     node --test downlink.test.mjs
//
// Run it as root inside the node's network namespace (tests/tests/browser.rs sets it up): Bob's
// browser runs in the namespace KASKADE_FAR_NETNS, reaching the node through the veth
// KASKADE_CAP_DEVICE, whose node end this script shapes with `tc ... tbf`.
// Machine-readable lines (node's test runner prefixes them with "# "):
//   DOWNLINK case=<cap> ms_to_layer=<ms> ms_to_settled=<ms> layer=<WxH> decoded_pct=<n> freezes=<n> frozen_ms=<ms> switch_frozen_ms=<ms> ...
//   DOWNLINK_RECOVERY ms_to_top=<ms> frozen_ms=<ms>
//   DOWNLINK_TIMELINE t_ms=<ms> cap=<kbit> bob_sees=<height> bob_frozen_ms=<total> bob_kbps=<n> alice_f_kbps=<n> alice_h_kbps=<n> lost=<n> nacks=<n> rtx=<n> plis=<n> frames=<n> keyframes=<n>
//   DOWNLINK_REPAIRS nacks_received=<n> nacks_stale=<n> nacks_repeated=<n> retransmitted=<n> nacks_missed=<n> rtx_unwrapped=<n> rtx_redundant=<n> red_received=<n> red_sent=<n> keyframe_requests_received=<n> plis_sent=<n> (the node's counters)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, stepper, show, sleep, waitFor } from './helpers.mjs';

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const FAR_NETNS = process.env.KASKADE_FAR_NETNS;
const DEVICE = process.env.KASKADE_CAP_DEVICE;
const MEETING = `downlink-${randomBytes(4).toString('hex')}`;
const STEP_TIMEOUT = 120_000;
// the node is reached at an address that is not loopback: let the pages use the camera there
const ORIGIN_FLAG = `--unsafely-treat-insecure-origin-as-secure=${BASE_URL}`;

/** Shapes the node's side of Bob's link to `kbit` kbit/s (null: no cap). */
function cap(kbit) {
  if (kbit === null) {
    execFileSync('tc', ['qdisc', 'del', 'dev', DEVICE, 'root']);
    return;
  }
  // a 200 ms queue, as a home router's buffer
  execFileSync('tc', ['qdisc', 'replace', 'dev', DEVICE, 'root', 'tbf', 'rate', `${kbit}kbit`,
    'burst', '8kb', 'latency', '200ms']);
}

describe(`downlink caps in ${MEETING} at ${BASE_URL}`, { timeout: 6 * STEP_TIMEOUT }, () => {
  const closers = [];
  /** @type {Record<string, Participant>} */
  const p = {};
  let capKbit = 0; // for the timeline: 0 is no cap
  const timeline = [];
  let sampler = null;
  const started = Date.now();

  before(async () => {
    assert.ok(FAR_NETNS && DEVICE, 'KASKADE_FAR_NETNS and KASKADE_CAP_DEVICE name Bob\'s link');
    const near = await launchBrowser({ args: [ORIGIN_FLAG] });
    const far = await launchBrowser({ netns: FAR_NETNS, args: [ORIGIN_FLAG] });
    closers.push(near.close, far.close);
    for (const [name, browser] of [['Alice', near.browser], ['Bob', far.browser], ['Carol', near.browser]]) {
      p[name] = await Participant.open(browser, name);
    }
  });

  after(async () => {
    clearInterval(sampler);
    try { cap(null); } catch { /* no cap left */ }
    for (const close of closers) await close();
    const metrics = await (await fetch(`${BASE_URL}/node/metrics`)).text();
    const counter = (name) => metrics.match(new RegExp(`^kaskade_sfu_${name}_total (\\S+)`, 'm'))?.[1];
    console.log(`DOWNLINK_REPAIRS ${['nacks_received', 'nacks_stale', 'nacks_repeated', 'retransmitted', 'nacks_missed', 'rtx_unwrapped', 'rtx_redundant', 'red_received', 'red_sent',
      'keyframe_requests_received', 'plis_sent']
      .map((name) => `${name}=${counter(name)}`).join(' ')}`);
    console.log(`DOWNLINK_DROPPED ${[...metrics.matchAll(/^kaskade_sfu_dropped_total\{reason="([^"]+)"\} (\S+)/gm)]
      .filter((m) => m[2] !== '0').map((m) => `${m[1]}=${m[2]}`).join(' ')}`);
    for (const row of timeline) {
      console.log(`DOWNLINK_TIMELINE t_ms=${row.t} cap=${row.cap} bob_sees=${row.bobSees} bob_frozen_ms=${row.bobFrozenMs} ` +
        `bob_kbps=${row.bobKbps} alice_f_kbps=${row.f} alice_h_kbps=${row.h} ${row.detail}`);
    }
  });

  const step = stepper(it, STEP_TIMEOUT, () => Object.values(p));

  /** What `who` decodes of Alice: her inbound-rtp entry, once frames decode. */
  const aliceAt = async (who) => (await who.inboundDetail())
    .find((r) => r.kind === 'video' && r.participant === p.Alice.id && r.framesDecoded > 0) ?? null;

  /** Alice's outbound video by rid: {bytesSent, framesEncoded, active}. */
  const aliceLayers = () => p.Alice.page.evaluate(async () => {
    const out = {};
    (await window.kaskade.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out[s.rid ?? '-'] = { bytesSent: s.bytesSent, framesEncoded: s.framesEncoded, active: s.active };
      }
    });
    return out;
  });

  /** Everything Bob's transport received, in bytes. */
  const bobBytes = () => p.Bob.page.evaluate(async () => {
    let bytes = 0;
    (await window.kaskade.pc.getStats()).forEach((s) => {
      if (s.type === 'transport') bytes += s.bytesReceived ?? 0;
    });
    return bytes;
  });

  /** Samples the timeline every 500 ms: Bob's picture of Alice, his rate, Alice's layers. */
  function startSampler() {
    let last = null;
    sampler = setInterval(async () => {
      try {
        const [seen, bytes, layers] = await Promise.all([aliceAt(p.Bob), bobBytes(), aliceLayers()]);
        const now = { t: Date.now() - started, bytes, layers };
        if (last) {
          const kbps = (a, b) => Math.round((8 * (a - b)) / (now.t - last.t));
          const layerKbps = (rid) => (layers[rid] && last.layers[rid]
            ? kbps(layers[rid].bytesSent, last.layers[rid].bytesSent) : 0);
          timeline.push({ t: now.t, cap: capKbit, bobSees: seen?.frameHeight ?? 0,
            bobFrozenMs: Math.round(1000 * (seen?.totalFreezesDuration ?? 0)),
            detail: seen ? `lost=${seen.packetsLost} nacks=${seen.nackCount} rtx=${seen.retransmittedPacketsReceived} ` +
              `plis=${seen.pliCount} ` +
              `frames=${seen.framesDecoded} keyframes=${seen.keyFramesDecoded}` : '',
            bobKbps: kbps(bytes, last.bytes), f: layerKbps('f'), h: layerKbps('h') });
        }
        last = now;
      } catch { /* a page between states: the next sample */ }
    }, 500);
  }

  step('1. Alice, Carol and Bob (behind his own link) join; both see Alice in full size', async () => {
    for (const who of Object.values(p)) {
      await who.goto(BASE_URL, MEETING);
      const you = await waitFor(`${who.name} to be welcomed`, async () => (await who.state())?.you,
        (v) => v && v.id !== undefined && v.id !== null, { timeout: 15_000 });
      who.id = you.id;
    }
    // Alice is the one who speaks: the active speaker, whose video goes first
    await p.Bob.setMicMuted(true);
    await p.Carol.setMicMuted(true);
    // both show her large, taller than her top layer
    for (const who of [p.Bob, p.Carol]) {
      await who.page.evaluate((id) => {
        document.querySelector(`#grid .tile[data-participant-id="${id}"]`).style.width = '800px';
      }, p.Alice.id);
    }
    for (const who of [p.Bob, p.Carol]) {
      await waitFor(`${who.name} decoding Alice's top layer`, () => aliceAt(who),
        (r) => r && r.frameHeight === 480, { timeout: 30_000 });
    }
    // the node's answer negotiates retransmissions on repair streams (RTX): taken from the
    // browser's video, and sent on a repair SSRC of each video slot that carries a stream
    const answer = await p.Bob.page.evaluate(() => window.kaskade.pc.remoteDescription.sdp);
    const video = answer.split('\r\nm=').filter((m) => m.startsWith('video'));
    assert.ok(video.length > 1 && video.every((m) => /a=rtpmap:\d+ rtx\/90000/.test(m)),
      `RTX on every video m-line of the answer:\n${answer}`);
    const slots = video.filter((m) => m.includes('a=ssrc:'));
    assert.ok(slots.length > 0 && slots.every((m) => m.includes('a=ssrc-group:FID ')),
      `a repair SSRC for every video slot:\n${answer}`);
    startSampler();
  }, { essential: true });

  /** Waits until `who`'s picture of Alice has gone 3 s without a new freeze (at most 30 s). */
  async function untilCalm(who) {
    let last = await aliceAt(who);
    let calmSince = Date.now();
    const deadline = Date.now() + 30_000;
    while (Date.now() - calmSince < 3_000 && Date.now() < deadline) {
      await sleep(500);
      const now = await aliceAt(who);
      if ((now.totalFreezesDuration ?? 0) > (last.totalFreezesDuration ?? 0)) calmSince = Date.now();
      last = now;
    }
  }

  /** Caps Bob's link at `kbit` and measures what he sees of Alice once it settles. */
  async function capped(kbit, expectedHeight) {
    const [carolBefore, bobAtCap] = [await aliceAt(p.Carol), await aliceAt(p.Bob)];
    capKbit = kbit;
    const at = Date.now();
    cap(kbit);
    const reached = await waitFor(`Bob decoding Alice at ${expectedHeight} px behind ${kbit} kbit/s`,
      () => aliceAt(p.Bob), (r) => r && r.frameHeight === expectedHeight, { timeout: 30_000 });
    const msToLayer = Date.now() - at;
    // settled: the switch's own freezes are over (no new one for 3 s); then 15 s at the cap
    await untilCalm(p.Bob);
    const msToSettled = Date.now() - at;
    const [bobBefore, sentBefore] = [await aliceAt(p.Bob), await aliceLayers()];
    const heights = new Set();
    for (let i = 0; i < 15; i++) {
      await sleep(1_000);
      heights.add((await aliceAt(p.Bob)).frameHeight);
    }
    const [bobAfter, sentAfter, carolAfter] = [await aliceAt(p.Bob), await aliceLayers(), await aliceAt(p.Carol)];
    const rid = expectedHeight === 480 ? 'f' : 'h';
    const sent = sentAfter[rid].framesEncoded - sentBefore[rid].framesEncoded;
    const decoded = bobAfter.framesDecoded - bobBefore.framesDecoded;
    const freezes = (bobAfter.freezeCount ?? 0) - (bobBefore.freezeCount ?? 0);
    const frozenMs = Math.round(1000 * ((bobAfter.totalFreezesDuration ?? 0) - (bobBefore.totalFreezesDuration ?? 0)));
    const carolFrozenMs = Math.round(1000 * ((carolAfter.totalFreezesDuration ?? 0) - (carolBefore.totalFreezesDuration ?? 0)));
    // what the change itself cost, from the cap to the settled window (reported, not asserted)
    const switchFrozenMs = Math.round(1000 * ((bobBefore.totalFreezesDuration ?? 0) - (bobAtCap.totalFreezesDuration ?? 0)));
    const result = { kbit, msToLayer, msToSettled, reached: `${reached.frameWidth}x${reached.frameHeight}`,
      decodedPct: Math.round((1000 * decoded) / Math.max(sent, 1)) / 10, sent, decoded, freezes,
      frozenMs, switchFrozenMs, heights: [...heights], carolSees: carolAfter.frameHeight, carolFrozenMs };
    console.log(`DOWNLINK case=${kbit}kbit ms_to_layer=${msToLayer} ms_to_settled=${msToSettled} layer=${result.reached} ` +
      `decoded_pct=${result.decodedPct} freezes=${freezes} frozen_ms=${frozenMs} switch_frozen_ms=${switchFrozenMs} ` +
      `carol_sees=${carolAfter.frameHeight} carol_frozen_ms=${carolFrozenMs}`);
    return result;
  }

  step('2. behind 300 kbit/s Bob gets Alice\'s low layer without freezing; Carol keeps her top layer', async () => {
    const r = await capped(300, 240);
    assert.deepEqual(r.heights, [240], `Bob stays on the low layer: ${show(r)}`);
    assert.ok(r.decodedPct >= 95, `Bob decodes what Alice's low layer sends: ${show(r)}`);
    assert.ok(r.frozenMs < 500, `Bob's picture does not freeze: ${show(r)}`);
    assert.equal(r.carolSees, 480, `Carol keeps Alice's top layer: ${show(r)}`);
    assert.ok(r.carolFrozenMs < 500, `Carol's picture does not freeze: ${show(r)}`);
  }, { essential: true });

  step('3. when the cap lifts, Bob is back on Alice\'s top layer within 10 s', async () => {
    const before = await aliceAt(p.Bob);
    capKbit = 0;
    const at = Date.now();
    cap(null);
    await waitFor('Bob decoding Alice\'s top layer again', () => aliceAt(p.Bob),
      (r) => r && r.frameHeight === 480, { timeout: 30_000 });
    const ms = Date.now() - at;
    await sleep(2_000);
    const settled = await aliceAt(p.Bob);
    const frozenMs = Math.round(1000 * ((settled.totalFreezesDuration ?? 0) - (before.totalFreezesDuration ?? 0)));
    console.log(`DOWNLINK_RECOVERY ms_to_top=${ms} frozen_ms=${frozenMs}`);
    assert.ok(ms <= 10_000, `back on the top layer in ${ms} ms`);
    assert.equal(settled.frameHeight, 480, `and stays there: ${show(settled)}`);
  });

  step('4. behind 1 Mbit/s Bob keeps Alice\'s top layer without freezing', async () => {
    const r = await capped(1000, 480);
    assert.deepEqual(r.heights, [480], `Bob stays on the top layer: ${show(r)}`);
    assert.ok(r.decodedPct >= 95, `Bob decodes what Alice's top layer sends: ${show(r)}`);
    assert.ok(r.frozenMs < 500, `Bob's picture does not freeze: ${show(r)}`);
  });
});
