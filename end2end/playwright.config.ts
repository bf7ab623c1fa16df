import { defineConfig } from '@playwright/test';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The release build made by `scripts/build.sh` (scripts/test.sh runs it first). */
const server = '../target/release/backend-monitor';

/** First of the three ports the test servers use: 3210, or `E2E_PORT_BASE` (to run beside
 * another checkout's run). */
const PORT_BASE = Number(process.env.E2E_PORT_BASE ?? 3210);
/** Port of the server running backends.toml (demo backends plus a failing one). */
export const PANEL_PORT = PORT_BASE + 1;
/** Port of the server running the embedded default (no --config), as a newcomer would. */
export const DEFAULT_PORT = PORT_BASE;
/** Port of the server with API keys (keys.toml): the sign-in page and read-only sessions. */
export const KEYS_PORT = PORT_BASE + 2;
/** Port of the server with more backends than one page of the table holds. */
export const PAGES_PORT = PORT_BASE + 3;
/** How many backends that server has: 100 on the first page, the rest on the second. */
export const PAGED_BACKENDS = 120;
/** The keys that server accepts. */
export const ADMIN_KEY = 'e2e-admin-key-2f9c';
export const READ_KEY = 'e2e-read-key-7b1e';

/** The paged server's config: external backends at a closed port (they show as unreachable;
 * only their number matters here), named p000, p001… */
const pagesConfig = join(tmpdir(), `backend-monitor-e2e-pages-${PAGES_PORT}.toml`);
writeFileSync(
  pagesConfig,
  Array.from(
    { length: PAGED_BACKENDS },
    (_, i) => `[[models]]\nname = "p${String(i).padStart(3, '0')}"\naddress = "127.0.0.1:1"\n`,
  ).join(''),
);

export default defineConfig({
  testDir: './tests',
  fullyParallel: false,
  workers: 1,
  retries: 0,
  timeout: 60_000,
  expect: { timeout: 15_000 },
  forbidOnly: !!process.env.CI,
  reporter: [['list']],
  outputDir: 'test-results',
  use: {
    baseURL: `http://127.0.0.1:${PANEL_PORT}`,
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
  webServer: [
    {
      command: `${server} --config backends.toml --addr 127.0.0.1:${PANEL_PORT}`,
      url: `http://127.0.0.1:${PANEL_PORT}/version`,
      reuseExistingServer: !process.env.CI,
      timeout: 60_000,
      stdout: 'ignore',
      stderr: 'pipe',
    },
    {
      command: `${server} --addr 127.0.0.1:${DEFAULT_PORT}`,
      url: `http://127.0.0.1:${DEFAULT_PORT}/version`,
      reuseExistingServer: !process.env.CI,
      timeout: 60_000,
      stdout: 'ignore',
      stderr: 'pipe',
    },
    {
      command: `${server} --config keys.toml --addr 127.0.0.1:${KEYS_PORT} --api-keys ${ADMIN_KEY} --read-api-keys ${READ_KEY}`,
      url: `http://127.0.0.1:${KEYS_PORT}/healthz`,
      reuseExistingServer: !process.env.CI,
      timeout: 60_000,
      stdout: 'ignore',
      stderr: 'pipe',
    },
    {
      command: `${server} --config ${pagesConfig} --addr 127.0.0.1:${PAGES_PORT}`,
      url: `http://127.0.0.1:${PAGES_PORT}/healthz`,
      reuseExistingServer: !process.env.CI,
      timeout: 60_000,
      stdout: 'ignore',
      stderr: 'pipe',
    },
  ],
});
