// A room system called from the web client, in headless Chromium against a running kaskade
// (the all-in-one with --sip-listen) and an auto-answering baresip that sends H.264 and Opus,
// in one network namespace:
//
//   KASKADE_URL=http://127.0.0.1:8080 KASKADE_SIP_ROOM='Oslo room' node --test sip.test.mjs
//
// (the room system is in kaskade's SIP directory under that name). The moderator opens "Call
// room system", is told clearly when the typed address is not a SIP one, picks the room system
// from the directory's drop-down and calls it, and decodes its video in a tile that names it
// and says it is a SIP call; it sends keys from the tile's keypad (the Rust side checks that
// baresip got them); the tile's "Hang up" ends the call. Then a participant has the meeting call
// their phone (baresip again, behind the trunk the node is given): its tile shows a phone, and
// they hang it up from it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Participant, launchBrowser, waitFor } from './helpers.mjs';

const BASE_URL = (process.env.KASKADE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const SIP_ROOM = process.env.KASKADE_SIP_ROOM || 'Oslo room';
const MEETING = `sip-${randomBytes(4).toString('hex')}`;

describe(`a SIP call in meeting ${MEETING}`, { timeout: 120_000 }, () => {
  let browser;
  let closeBrowser = async () => {};
  let alice;
  let bob;

  before(async () => {
    ({ browser, close: closeBrowser } = await launchBrowser());
  });

  after(async () => {
    if (alice) console.log(await alice.diagnostics());
    if (bob) console.log(await bob.diagnostics());
    await closeBrowser();
  });

  it('a moderator calls a room system, everyone sees it, and the moderator hangs up', { timeout: 100_000 }, async () => {
    alice = await Participant.open(browser, 'Alice');
    await alice.goto(BASE_URL, MEETING);
    await waitFor('Alice to be welcomed', async () => (await alice.state())?.you,
      (v) => v && v.role === 'moderator', { timeout: 15_000 });
    const page = alice.page;
    await page.locator('#btn-call').click();
    assert.ok(await page.locator('#call-dialog').isVisible(), 'the dialog opens');

    // not a SIP address: the dialog says so and stays open
    await page.locator('#call-uri').fill('tel:+4930123456');
    await page.locator('#call-place').click();
    const error = await waitFor('the dialog to say why',
      () => page.locator('#call-error').textContent(), (t) => /sip: address/.test(t || ''),
      { timeout: 5_000 });
    console.log(`CALL_REFUSED ${error}`);
    assert.ok(await page.locator('#call-dialog').isVisible(), 'the dialog stays open');

    // the room system, picked from the directory (named as the directory names it)
    const rooms = page.locator('#call-room');
    await waitFor('the directory in the drop-down', () => rooms.locator('option').allTextContents(),
      (names) => names.includes(SIP_ROOM), { timeout: 5_000 });
    await rooms.selectOption({ label: SIP_ROOM });
    assert.ok(await page.locator('#call-uri').isDisabled(), 'a room from the directory needs no address');
    const called = Date.now();
    await page.locator('#call-place').click();
    await waitFor('the dialog to close once the call is placed',
      () => page.locator('#call-dialog').isVisible(), (v) => v === false, { timeout: 10_000 });
    const call = await waitFor('the call live in the participant list',
      async () => Object.values((await alice.state()).participants).find((p) => p.source),
      (p) => p && p.source.state === 'live', { timeout: 15_000 });
    assert.equal(call.name, SIP_ROOM);
    assert.equal(call.source.kind, 'sip');
    const frames = await waitFor('the room system\'s video decoded in Chromium',
      async () => (await alice.stats())[call.id]?.framesDecoded ?? 0, (n) => n >= 30,
      { timeout: 30_000 });
    console.log(`CALL_FIRST_FRAMES frames=${frames} ms_since_call=${Date.now() - called}`);
    const tile = alice.tile(call.id);
    assert.equal((await tile.locator('.source-badge').textContent()).trim(), 'SIP');
    assert.equal(await tile.locator('.name').textContent(), SIP_ROOM);

    // steer the room system's menu from the keypad (the test checks that baresip got the keys)
    await tile.hover();
    await tile.locator('.mod-keys').click();
    assert.ok(await page.locator('#keypad-dialog').isVisible(), 'the keypad opens');
    await page.locator('#keypad-dialog .key[data-key="5"]').click();
    await page.locator('#keypad-dialog .key[data-key="#"]').click();
    assert.equal(await page.locator('#keypad-sent').textContent(), '5#');
    await page.waitForTimeout(1_000); // the two tones take 480 ms
    await page.locator('#keypad-close').click();

    // hang up from the tile
    const hangUp = tile.locator('.mod-remove');
    assert.equal((await hangUp.textContent()).trim(), 'Hang up');
    await tile.hover();
    await hangUp.click();
    await waitFor('the call to leave the meeting',
      async () => Object.values((await alice.state()).participants).some((p) => p.source),
      (present) => present === false, { timeout: 10_000 });
  });

  it('a moderator reads the meeting\'s dial-in number and sets its PIN', { timeout: 30_000 }, async () => {
    const page = alice.page;
    await page.locator('#btn-dial-in').click();
    const number = await waitFor('the meeting number', () => page.locator('#dial-in-number').textContent(),
      (t) => /^\d{3} \d{3} \d{3}$/.test(t || ''), { timeout: 5_000 });
    console.log(`CALL_DIAL_IN number=${number}`);
    await page.locator('#dial-in-pin').fill('12');
    await page.locator('#dial-in-save').click();
    await waitFor('the PIN to be refused', () => page.locator('#dial-in-error').textContent(),
      (t) => /4 to 8 digits/.test(t || ''), { timeout: 5_000 });
    await page.locator('#dial-in-pin').fill('2468');
    await page.locator('#dial-in-save').click();
    await waitFor('the PIN to be saved', () => page.evaluate(() => window.kaskade.frames.some(
      (f) => f.dir === 'in' && f.type === 'dial_in' && f.frame.pin === '2468')), (v) => v, { timeout: 5_000 });
    assert.ok(await page.locator('#dial-in-error').isHidden(), 'no error once saved');
    assert.equal(await page.locator('#dial-in-number').textContent(), number, 'the number stays');
    await page.locator('#dial-in-close').click();
  });

  it('a participant has the meeting call their phone, sees it as a phone and hangs it up', { timeout: 60_000 }, async () => {
    bob = await Participant.open(browser, 'Bob');
    await bob.goto(BASE_URL, MEETING);
    await waitFor('Bob to be welcomed', async () => (await bob.state())?.you,
      (v) => v && v.role === 'participant', { timeout: 15_000 });
    const page = bob.page;
    assert.ok(await page.locator('#btn-call').isHidden(), 'no room systems for Bob');
    await page.locator('#btn-phone').click();
    await page.locator('#phone-number').fill('+47 22 00 00 00');
    await page.locator('#phone-call').click();
    await waitFor('the phone dialog to close once the call is placed',
      () => page.locator('#phone-dialog').isVisible(), (v) => v === false, { timeout: 10_000 });
    const phone = await waitFor('the phone live in the participant list',
      async () => Object.values((await bob.state()).participants).find((p) => p.source),
      (p) => p && p.source.state === 'live', { timeout: 15_000 });
    assert.equal(phone.source.kind, 'phone');
    assert.equal(phone.name, 'Bob (phone)');
    const tile = bob.tile(phone.id);
    assert.equal((await tile.locator('.source-badge').textContent()).trim(), 'Phone');
    assert.equal(await tile.locator('.source-badge svg.icon-phone').count(), 1, 'a phone icon');
    await tile.hover();
    assert.ok(await tile.locator('.mod-mute').isHidden(), 'Bob moderates nobody');
    const hangUp = tile.locator('.mod-remove');
    assert.equal((await hangUp.textContent()).trim(), 'Hang up');
    await hangUp.click();
    await waitFor('the phone to leave the meeting',
      async () => Object.values((await alice.state()).participants).some((p) => p.source),
      (present) => present === false, { timeout: 10_000 });
  });
});
