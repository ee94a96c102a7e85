// Helpers for driving the kaskade web client (web/assets/client.js) in headless Chromium.
// The client exposes its state on window.kaskade; these helpers read it and click its UI.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

// playwright-core from `npm install` here; else the copy preinstalled on kaskade's dev and CI
// machines (ES modules ignore NODE_PATH, so name it explicitly; KASKADE_PLAYWRIGHT overrides).
const { chromium } = await import('playwright-core').catch(() => import(
  process.env.KASKADE_PLAYWRIGHT || '/opt/kaskade-node/node_modules/playwright-core/index.mjs'));

export const CHROMIUM = process.env.KASKADE_CHROMIUM || '/usr/lib/chromium/chromium';

/** Flags measured to work on this machine (shared/DESIGN-NOTES.md, "WebRTC tests"). */
export const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Launches Chromium. Playwright's launch() always starts from a fresh temporary profile
 * (user-data-dir) and removes it on close. Returns {browser, close}; close() is idempotent.
 * `netns` runs it in that network namespace (through `ip netns exec`, so the test must run as
 * root); `args` adds flags.
 */
export async function launchBrowser({ netns = null, args = [] } = {}) {
  let executablePath = CHROMIUM;
  if (netns) {
    const dir = mkdtempSync(join(tmpdir(), 'kaskade-chromium-'));
    executablePath = join(dir, 'chromium');
    writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${netns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_FLAGS, ...args],
    timeout: 30_000,
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await browser.close().catch(() => {});
    if (netns) rmSync(dirname(executablePath), { recursive: true, force: true });
  };
  return { browser, close };
}

/**
 * A test script's steps: `step(name, body, {essential})` runs `body` as a node:test `it` with
 * `timeout`; when a step fails it prints every page's diagnostics (`participants()` lists
 * them), and an essential step's failure skips every later step.
 */
export function stepper(it, timeout, participants) {
  let broken = null; // set when a step fails that every later step depends on
  return function step(name, body, { essential = false } = {}) {
    it(name, { timeout }, async (t) => {
      if (broken) return t.skip(`skipped: "${broken}" failed`);
      try {
        await body(t);
      } catch (err) {
        if (essential) broken = name;
        for (const who of participants()) console.error(await who.diagnostics());
        throw err;
      }
    });
  };
}

/**
 * Polls `probe` every `interval` ms until `check(value)` is true; returns that value. On
 * timeout, throws with the last value seen, so failures say what the page looked like.
 */
export async function waitFor(what, probe, check = Boolean, { timeout = 10_000, interval = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (check(last)) return last;
    } catch (err) {
      last = `error: ${err.message}`;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last value: ${show(last)}`);
    }
    await sleep(interval);
  }
}

export function show(value) {
  try { return JSON.stringify(value); } catch { return String(value); }
}

/** One browser participant: its own context and page, plus a console log for diagnostics. */
export class Participant {
  constructor(name, context, page) {
    this.name = name;
    this.context = context;
    this.page = page;
    this.id = null;
    this.console = [];
    const keep = (line) => {
      this.console.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
      if (this.console.length > 100) this.console.shift();
    };
    page.on('console', (m) => keep(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => keep(`pageerror: ${e.message}`));
    page.on('crash', () => keep('page crashed'));
  }

  static async open(browser, name) {
    const context = await browser.newContext({
      permissions: ['camera', 'microphone'],
      viewport: { width: 960, height: 640 },
    });
    return new Participant(name, context, await context.newPage());
  }

  /**
   * Navigates to the meeting with autojoin (and a token, if given); returns the navigation
   * start (Date.now()).
   */
  async goto(baseUrl, meeting, token = null) {
    const tokenParam = token ? `&token=${encodeURIComponent(token)}` : '';
    const url = `${baseUrl}/m/${encodeURIComponent(meeting)}?name=${encodeURIComponent(this.name)}&autojoin=1${tokenParam}`;
    const start = Date.now();
    await this.page.goto(url, { waitUntil: 'load', timeout: 15_000 });
    return start;
  }

  /** Plain-JSON snapshot of window.kaskade (participants as an object keyed by id). */
  state() {
    return this.page.evaluate(() => {
      const k = window.kaskade;
      if (!k) return null;
      const participants = k.participants instanceof Map
        ? Object.fromEntries(k.participants) : { ...k.participants };
      return {
        you: k.you, participants, speaker: k.speaker, locked: k.locked, recording: k.recording,
        status: k.status, statusCode: k.statusCode, slots: k.slots,
        node: k.node, reconnects: k.reconnects,
        pcState: k.pc ? k.pc.connectionState : null,
        iceState: k.pc ? k.pc.iceConnectionState : null,
      };
    });
  }

  /** window.kaskade.stats(): participant id -> {framesDecoded, audioBytes}. */
  stats() {
    return this.page.evaluate(() => window.kaskade.stats());
  }

  /** framesDecoded from the only other participant (0 until there is exactly one). */
  async framesFromOnlyOther() {
    const values = Object.values((await this.stats()) || {});
    return values.length === 1 ? values[0].framesDecoded : 0;
  }

  /** framesDecoded of the inbound video stream on one receive slot (by mid), or null. */
  framesDecodedOnMid(mid) {
    return this.page.evaluate(async (mid) => {
      const pc = window.kaskade.pc;
      if (!pc) return null;
      const midOfTrack = new Map(pc.getTransceivers().map((t) => [t.receiver.track.id, t.mid]));
      let frames = null;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video' &&
            (s.mid ?? midOfTrack.get(s.trackIdentifier)) === mid) frames = s.framesDecoded ?? 0;
      });
      return frames;
    }, mid);
  }

  /** Per receive slot with traffic: the inbound-rtp counters that explain a stalled stream. */
  inboundDetail() {
    return this.page.evaluate(async () => {
      const pc = window.kaskade.pc;
      if (!pc) return null;
      const report = await pc.getStats();
      const rows = [];
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        const slot = window.kaskade.slots[s.mid];
        const codec = s.codecId && report.get(s.codecId);
        rows.push({
          mid: s.mid, kind: s.kind, participant: slot ? slot.participant : null, ssrc: s.ssrc,
          codec: codec ? `${codec.mimeType} ${codec.sdpFmtpLine || ''}`.trim() : null,
          packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, bytesReceived: s.bytesReceived,
          framesReceived: s.framesReceived, framesDecoded: s.framesDecoded, framesDropped: s.framesDropped,
          keyFramesDecoded: s.keyFramesDecoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
          nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount,
          retransmittedPacketsReceived: s.retransmittedPacketsReceived,
          freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
          decoder: s.decoderImplementation,
        });
      });
      return rows;
    });
  }

  /** The inbound-rtp row (see inboundDetail) of participant `id`'s video once one of its
   *  frames was decoded, or null. */
  async videoFrom(id) {
    return (await this.inboundDetail() ?? [])
      .find((r) => r.kind === 'video' && r.participant === id && r.framesDecoded > 0) ?? null;
  }

  /** Sets the CSS width of participant `id`'s tile ('' gives it back to the grid). */
  setTileWidth(id, width) {
    return this.page.evaluate(([tile, w]) => {
      document.querySelector(`#grid .tile[data-participant-id="${tile}"]`).style.width = w;
    }, [id, width]);
  }

  /**
   * What the own video sender sends now: the largest layer it sends ({frameWidth, frameHeight,
   * framesEncoded}), every layer it sends (`layers`: {rid, frameWidth, frameHeight}) and the
   * rids of the simulcast layers paused at the node's word (`paused`), or null. A layer the
   * encoder dropped or that is paused (framesPerSecond 0, or inactive) is left out of `layers`.
   */
  outboundVideo() {
    return this.page.evaluate(async () => {
      const pc = window.kaskade.pc;
      if (!pc) return null;
      const layers = [];
      const paused = [];
      (await pc.getStats()).forEach((s) => {
        if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
        if (s.active === false) paused.push(s.rid ?? null);
        else if (s.frameWidth && (s.framesPerSecond ?? 1) > 0) {
          layers.push({ rid: s.rid ?? null, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
            framesEncoded: s.framesEncoded });
        }
      });
      if (layers.length === 0) return null;
      layers.sort((a, b) => a.frameHeight - b.frameHeight);
      return { ...layers[layers.length - 1], layers, paused: paused.sort() };
    });
  }

  /** The transport entry's srtpCipher (and DTLS details) from getStats(). */
  transportStats() {
    return this.page.evaluate(async () => {
      const out = [];
      (await window.kaskade.pc.getStats()).forEach((s) => {
        if (s.type === 'transport') {
          out.push({ srtpCipher: s.srtpCipher, dtlsCipher: s.dtlsCipher, tlsVersion: s.tlsVersion,
            dtlsState: s.dtlsState });
        }
      });
      return out;
    });
  }

  /** Starts an in-page watcher recording performance.now() (ms since navigation) at the first
   *  decoded remote video frame, so the measurement does not depend on the test's polling. */
  startFirstFrameWatch() {
    return this.page.evaluate(() => {
      window.__firstFrameMs = null;
      const tick = async () => {
        try {
          const stats = window.kaskade ? await window.kaskade.stats() : {};
          if (Object.values(stats).some((e) => e.framesDecoded > 0)) {
            window.__firstFrameMs = Math.round(performance.now());
            return;
          }
        } catch { /* not connected yet */ }
        setTimeout(tick, 50);
      };
      tick();
    });
  }

  firstFrameMs() {
    return this.page.evaluate(() => window.__firstFrameMs);
  }

  tile(id) {
    return this.page.locator(`#grid .tile[data-participant-id="${id}"]`);
  }

  /** Clicks the own mic button until the local mute state is `muted`. */
  async setMicMuted(muted) {
    const isMuted = () => this.page.evaluate(() => document.querySelector('#btn-audio').getAttribute('aria-pressed') === 'true');
    if ((await isMuted()) !== muted) await this.page.click('#btn-audio');
    await waitFor(`${this.name} mic muted=${muted}`, isMuted, (v) => v === muted, { timeout: 2_000 });
  }

  /** Multi-line description of this page's state for failure reports. */
  async diagnostics() {
    let st;
    try {
      st = await this.page.evaluate(() => {
        const k = window.kaskade;
        return k ? {
          you: k.you, participants: k.participants, speaker: k.speaker, status: k.status,
          statusCode: k.statusCode, slots: k.slots, node: k.node, reconnects: k.reconnects,
          pc: k.pc && { connection: k.pc.connectionState, ice: k.pc.iceConnectionState,
            signaling: k.pc.signalingState },
          lastFrames: (k.frames || []).slice(-25),
        } : 'window.kaskade missing';
      });
    } catch (err) {
      st = `page unavailable: ${err.message}`;
    }
    let stats;
    try { stats = await this.stats(); } catch (err) { stats = err.message; }
    let inbound;
    try { inbound = await this.inboundDetail(); } catch (err) { inbound = err.message; }
    return [
      `--- ${this.name} (id ${this.id}) ---`,
      `state: ${show(st)}`,
      `stats: ${show(stats)}`,
      `inbound: ${show(inbound)}`,
      ...this.console.slice(-30),
    ].join('\n');
  }
}
