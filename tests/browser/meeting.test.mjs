// End-to-end test of a three-person meeting in headless Chromium against a running kaskade SFU.
//
//   cd tests/browser && KASKADE_URL=http://127.0.0.1:8080 node --test meeting.test.mjs
//
// It starts no server: run it (and the server) inside one private network namespace, see
// shared/DESIGN-NOTES.md. KASKADE_MEETING names the meeting (default: a random name). The node
// must run with open joins (no --secret), so that the first participant is the moderator.
// KASKADE_SETTLE_MS delays step 2's measurement (for diagnosing a stall after joining).
// Machine-readable lines (node's test runner prefixes them with "# "):
//   JOIN_TO_FIRST_FRAME_MS name=<name> ms=<ms since navigation start>
//   SRTP_CIPHER <cipher>
//   PUBLISHER_CHANGE resolution=<WxH> kbps=<n> ms_to_size=<ms> freezes=<n> frozen_ms=<ms>
//   SIMULCAST layers=<rid:WxH,...> to_small_ms=<ms> small_frozen_ms=<ms> to_large_ms=<ms> large_frozen_ms=<ms>
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, stepper, show, sleep, waitFor } from './helpers.mjs';

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MEETING = process.env.KASKADE_MEETING || `e2e-${randomBytes(4).toString('hex')}`;
const STEP_TIMEOUT = 90_000;
// Extra wait before step 2 measures, to look past a startup stall (default none: a freeze
// right after joining is a bug).
const SETTLE_MS = Number(process.env.KASKADE_SETTLE_MS || 0);

describe(`kaskade meeting ${MEETING} at ${BASE_URL}`, { timeout: 6 * STEP_TIMEOUT }, () => {
  let closeBrowser = async () => {};
  let browser;
  /** @type {Record<string, Participant>} */
  const p = {};
  let everyone = [];

  before(async () => {
    ({ browser, close: closeBrowser } = await launchBrowser());
  });

  after(async () => {
    await closeBrowser();
  });

  const step = stepper(it, STEP_TIMEOUT, () => everyone);

  const others = (me) => everyone.filter((x) => x !== me);

  step('1. three participants join and decode their first remote frame', async () => {
    for (const name of ['Alice', 'Bob', 'Carol']) {
      const who = await Participant.open(browser, name);
      p[name] = who;
      everyone.push(who);
      await who.goto(BASE_URL, MEETING);
      await who.startFirstFrameWatch();
      const you = await waitFor(`${name} to be welcomed`, async () => (await who.state())?.you,
        (v) => v && v.id !== undefined && v.id !== null, { timeout: 15_000 });
      who.id = you.id;
      console.log(`joined name=${name} id=${you.id} role=${you.role}`);
    }
    assert.equal((await p.Alice.state()).you.role, 'moderator', 'the first participant is the moderator');
    assert.equal(new Set(everyone.map((x) => x.id)).size, 3, 'participant ids are unique');

    for (const who of everyone) {
      const ms = await waitFor(`${who.name}'s first decoded remote video frame`,
        () => who.firstFrameMs(), (v) => typeof v === 'number', { timeout: 30_000 });
      console.log(`JOIN_TO_FIRST_FRAME_MS name=${who.name} ms=${ms}`);
    }
  }, { essential: true });

  step('2. everyone decodes video and receives audio from both others', async () => {
    const ready = (who) => async () => {
      const s = await who.stats();
      return others(who).every((o) => s[o.id]?.framesDecoded > 0 && s[o.id]?.audioBytes > 0) ? s : null;
    };
    if (SETTLE_MS) await sleep(SETTLE_MS);
    const first = {};
    for (const who of everyone) {
      first[who.name] = await waitFor(`${who.name} receiving video and audio from both others`,
        ready(who), Boolean, { timeout: 20_000 });
    }
    await sleep(2_000);
    for (const who of everyone) {
      const before = first[who.name];
      const now = await who.stats();
      for (const o of others(who)) {
        const a = before[o.id];
        const b = now[o.id];
        assert.ok(b, `${who.name} has no stats for ${o.name} any more: ${show(now)}`);
        assert.ok(b.framesDecoded > a.framesDecoded,
          `${who.name}: framesDecoded for ${o.name} did not grow over 2 s (${a.framesDecoded} -> ${b.framesDecoded})`);
        assert.ok(b.audioBytes > a.audioBytes,
          `${who.name}: audio bytes from ${o.name} did not grow over 2 s (${a.audioBytes} -> ${b.audioBytes})`);
        console.log(`${who.name} <- ${o.name}: +${b.framesDecoded - a.framesDecoded} frames, ` +
          `+${b.audioBytes - a.audioBytes} audio bytes in ~2 s`);
      }
    }
    // the audio above went out as RED (the web client prefers it, the node accepts it) and
    // reached the others through the node's unwrapping
    const metrics = await (await fetch(`${BASE_URL}/node/metrics`)).text();
    const red = Number(metrics.match(/^kaskade_sfu_red_received_total (\S+)/m)?.[1]);
    console.log(`RED_RECEIVED packets=${red}`);
    assert.ok(red > 100, `the browsers' audio came as RED: ${red} packets`);
  }, { essential: true });

  step('3. Bob mutes his audio; Alice and Carol see it within 3 s', async () => {
    await p.Bob.setMicMuted(true);
    for (const who of [p.Alice, p.Carol]) {
      await waitFor(`${who.name} to see Bob audio_muted`,
        async () => (await who.state()).participants[p.Bob.id],
        (bob) => bob && bob.audio_muted === true, { timeout: 3_000 });
      await waitFor(`${who.name} to show Bob's muted-mic indicator`,
        () => who.tile(p.Bob.id).locator('.ind-audio').isVisible(), Boolean, { timeout: 1_000 });
    }
  });

  step('4. active speaker follows the only unmuted participant', async () => {
    // Every fake microphone beeps, so leave exactly one participant unmuted at a time.
    await p.Bob.setMicMuted(true);
    await p.Alice.setMicMuted(true);
    await p.Carol.setMicMuted(false);
    await waitFor('Alice to see Carol as the active speaker',
      async () => (await p.Alice.state()).speaker, (id) => id === p.Carol.id, { timeout: 5_000 });
    await waitFor('Carol\'s tile on Alice\'s page to be highlighted',
      () => p.Alice.tile(p.Carol.id).evaluate((el) => el.classList.contains('speaking')), Boolean,
      { timeout: 1_000 });

    await p.Bob.setMicMuted(false);
    await p.Carol.setMicMuted(true);
    await waitFor('Alice to see Bob as the active speaker',
      async () => (await p.Alice.state()).speaker, (id) => id === p.Bob.id, { timeout: 5_000 });
    await waitFor('Bob\'s tile on Alice\'s page to be highlighted',
      () => p.Alice.tile(p.Bob.id).evaluate((el) => el.classList.contains('speaking')), Boolean,
      { timeout: 1_000 });
  });

  step('5. the moderator removes Carol', async () => {
    const carol = p.Carol.id;
    const carolMid = Object.entries((await p.Bob.state()).slots)
      .find(([, s]) => s.kind === 'video' && s.participant === carol)?.[0];
    assert.ok(carolMid !== undefined, 'Bob has a video slot for Carol before the removal');

    await p.Alice.tile(carol).locator('.mod-remove').click({ timeout: 3_000 });

    await waitFor('Carol\'s page to show that she was removed',
      async () => ({ code: (await p.Carol.state()).statusCode,
        text: await p.Carol.page.textContent('#status') }),
      (v) => v.code === 'removed' && /removed/i.test(v.text), { timeout: 3_000 });
    for (const who of [p.Alice, p.Bob]) {
      await waitFor(`${who.name} to no longer list Carol`,
        async () => ({ listed: carol in (await who.state()).participants,
          tiles: await who.tile(carol).count() }),
        (v) => !v.listed && v.tiles === 0, { timeout: 3_000 });
    }

    // Frames already in flight may still decode: let them drain, then expect silence.
    await sleep(1_000);
    const slots = (await p.Bob.state()).slots;
    const f1 = await p.Bob.framesDecodedOnMid(carolMid);
    const s1 = await p.Bob.stats();
    await sleep(2_000);
    const f2 = await p.Bob.framesDecodedOnMid(carolMid);
    const s2 = await p.Bob.stats();
    assert.equal(s2[carol], undefined, `Bob's stats still attribute media to Carol: ${show(s2)}`);
    if (slots[carolMid]) {
      // The node gave Carol's old slot to someone else: its counter may rightly grow.
      console.log(`note: Bob's slot ${carolMid} now carries ${show(slots[carolMid])}`);
    } else {
      assert.equal(f2, f1, `Bob still decodes frames on Carol's old slot ${carolMid} (${f1} -> ${f2})`);
    }
    // Alice keeps flowing to Bob.
    assert.ok(s2[p.Alice.id]?.framesDecoded > s1[p.Alice.id]?.framesDecoded,
      `Bob stopped decoding Alice after Carol's removal: ${show(s1)} -> ${show(s2)}`);
  });

  step('6. media is encrypted with SRTP AEAD_AES_256_GCM', async () => {
    const transports = await p.Alice.transportStats();
    const cipher = transports.find((t) => t.srtpCipher)?.srtpCipher ?? 'none';
    console.log(`SRTP_CIPHER ${cipher}`);
    console.log(`transport ${show(transports)}`);
    // Chromium 156 names it after BoringSSL's profile, "SRTP_AEAD_AES_256_GCM"; older versions
    // and the RFC 7714 name say "AEAD_AES_256_GCM".
    assert.equal(cipher.replace(/^SRTP_/, ''), 'AEAD_AES_256_GCM');
  });

  step('7. Alice changes her resolution and bitrate mid-call; Bob follows without freezing', async () => {
    // Bob's inbound video from Alice, once it decodes
    const fromAlice = () => p.Bob.videoFrom(p.Alice.id);
    // (resolution, kbps, what Bob's frames must then be: at most 160 wide, or wider than that)
    const changes = [['160x120', '48', (w) => w <= 160], ['1280x720', '1440', (w) => w > 160],
      ['640x480', '1000', (w) => w > 160]];
    for (const [resolution, kbps, fits] of changes) {
      const before = await waitFor('Bob decoding Alice', fromAlice, Boolean, { timeout: 10_000 });
      const started = Date.now();
      await p.Alice.page.selectOption('#sel-bitrate', kbps);
      await p.Alice.page.selectOption('#sel-resolution', resolution);
      const sent = await waitFor(`Alice sending ${resolution}`, () => p.Alice.outboundVideo(),
        (o) => o && fits(o.frameWidth), { timeout: 15_000 });
      // Bob's tile takes one of her simulcast layers: whichever fills it
      const after = await waitFor(`Bob decoding Alice at her new size (${show(sent)})`, fromAlice,
        (r) => r && sent.layers.some((l) => l.frameWidth === r.frameWidth) && fits(r.frameWidth),
        { timeout: 15_000 });
      const toSize = Date.now() - started;
      // then two more seconds of her new stream
      await sleep(2_000);
      const settled = await fromAlice();
      assert.ok(settled.framesDecoded > after.framesDecoded + 10,
        `Bob keeps decoding Alice at ${resolution}: ${show(after)} -> ${show(settled)}`);
      const freezes = (settled.freezeCount ?? 0) - (before.freezeCount ?? 0);
      const frozenMs = Math.round(1000 * ((settled.totalFreezesDuration ?? 0) - (before.totalFreezesDuration ?? 0)));
      console.log(`PUBLISHER_CHANGE resolution=${resolution} kbps=${kbps} ms_to_size=${toSize} ` +
        `freezes=${freezes} frozen_ms=${frozenMs} bob_sees=${settled.frameWidth}x${settled.frameHeight}`);
      // a freeze, if any, is shorter than one keyframe interval (Chromium's own keyframe on a
      // new track, or the one kaskade asks for): a second
      assert.ok(frozenMs < 1_000, `Bob's picture of Alice froze for ${frozenMs} ms at ${resolution}`);
    }
  });

  step('8. Bob shows Alice small, then large: the node sends him the simulcast layer that fits and pauses the one nobody receives', async () => {
    const fromAlice = () => p.Bob.videoFrom(p.Alice.id);
    // Bob alone receives Alice, in a large tile: her full-size layer; her 320x240 layer ('h')
    // is paused at the node's word (her camera gives 640x480: Chromium sends no 'q' of it)
    const sent = await waitFor("Alice sending her full-size layer, 'h' paused", () => p.Alice.outboundVideo(),
      (o) => o && o.frameHeight === 480 && o.paused.includes('h'), { timeout: 20_000 });
    const largest = sent.frameHeight;
    const smallest = largest / 2;
    await waitFor(`Bob decoding Alice's top layer (${show(sent)})`, fromAlice,
      (r) => r && r.frameHeight === largest, { timeout: 15_000 });
    const measure = async (what, width, height) => {
      const before = await fromAlice();
      const started = Date.now();
      await p.Bob.setTileWidth(p.Alice.id, width);
      const reached = await waitFor(`Bob decoding Alice at ${height} px (${what})`, fromAlice,
        (r) => r && r.frameHeight === height, { timeout: 15_000 });
      const ms = Date.now() - started;
      await sleep(1_500);
      const settled = await fromAlice();
      assert.ok(settled.framesDecoded > reached.framesDecoded + 10, `Bob keeps decoding: ${show(settled)}`);
      assert.equal(settled.frameHeight, height, `Bob stays on the ${what} layer`);
      const frozenMs = Math.round(1000 * ((settled.totalFreezesDuration ?? 0) - (before.totalFreezesDuration ?? 0)));
      return { ms, frozenMs, alice: await p.Alice.outboundVideo() };
    };
    // a tile 120 px wide is 90 px tall: the 320x240 layer fills it, taken up again for Bob,
    // and the full-size one, which nobody receives now, is paused
    const small = await measure('small', '120px', smallest);
    assert.deepEqual(small.alice.paused, ['f'], `Alice pauses her full-size layer: ${show(small.alice)}`);
    const large = await measure('large', '', largest);
    assert.deepEqual(large.alice.paused, ['h'], `and then her 320x240 one: ${show(large.alice)}`);
    console.log(`SIMULCAST layers=${sent.layers.map((l) => `${l.rid}:${l.frameWidth}x${l.frameHeight}`).join(',')} ` +
      `paused=${sent.paused.join('+')} to_small_ms=${small.ms} small_frozen_ms=${small.frozenMs} ` +
      `to_large_ms=${large.ms} large_frozen_ms=${large.frozenMs}`);
    assert.ok(small.frozenMs < 500 && large.frozenMs < 500,
      `a layer switch froze Bob's picture: ${show({ small, large })}`);
  });
});
