// Debian's Chromium (/usr/bin/chromium) under playwright-core: a fresh profile and flags
// that keep it off the network; nothing downloads a browser.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = '/usr/bin/chromium';
export const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** A fresh profile, the flags above, Debian's Chromium; returns [context, cleanup]. */
export async function launch() {
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(join(tmpdir(), 'rnn-runtime-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
  });
  return [context, async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }];
}
