// Headless Debian Chromium through playwright-core (no browser download):
// CHROMIUM overrides the binary.
import {mkdtempSync, rmSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {chromium} from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Launches Chromium with a fresh profile (playwright wants it as
 * userDataDir, not as --user-data-dir); close() also removes the profile.
 * Returns {context, close}. */
export async function launch() {
    const profile = mkdtempSync(path.join(os.tmpdir(), 'broker-e2e-chromium-'));
    let context;
    try {
        context = await chromium.launchPersistentContext(profile, {
            executablePath: CHROMIUM,
            headless: true,
            timeout: 60000,
            ignoreHTTPSErrors: true,
            args: [
                '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--ignore-certificate-errors',
            ],
        });
    } catch (err) {
        rmSync(profile, {recursive: true, force: true});
        throw err;
    }
    return {
        context,
        async close() {
            await context.close().catch(() => {});
            rmSync(profile, {recursive: true, force: true});
        },
    };
}
