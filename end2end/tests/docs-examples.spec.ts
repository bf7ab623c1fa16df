import { expect, test } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { DEFAULT_PORT } from '../playwright.config';

/** Runs curl exactly as LocalAI's backend-monitor page shows it (`-d` without `-X` is a POST),
 * against the embedded default. */
function curl(...args: string[]): { status: number; body: any } {
  const out = execFileSync('curl', ['-s', '-w', '\n%{http_code}', ...args], { encoding: 'utf8' });
  const lines = out.trimEnd().split('\n');
  const status = Number(lines.pop());
  return { status, body: JSON.parse(lines.join('\n')) };
}

const base = `http://localhost:${DEFAULT_PORT}`;

async function waitUntilRunning(model: string) {
  await expect
    .poll(() => curl(`${base}/api/backends`).body.backends.find((b: any) => b.name === model)?.lifecycle, {
      timeout: 30_000,
    })
    .toBe('running');
}

test("LocalAI's documented curl examples work against the embedded default", async () => {
  await waitUntilRunning('demo-chat');
  await waitUntilRunning('demo-legacy');

  const monitor = curl(`${base}/backend/monitor`, '-H', 'Content-Type: application/json', '-d', '{"model": "demo-chat"}');
  expect(monitor.status).toBe(200);
  expect(monitor.body.state).toBe(2);
  expect(monitor.body.memory.total).toBeGreaterThan(0);
  expect(monitor.body.memory.breakdown.weights).toBe(96 * 1024 * 1024);

  const fallback = curl(`${base}/backend/monitor`, '-H', 'Content-Type: application/json', '-d', '{"model": "demo-legacy"}');
  expect(fallback.status).toBe(200);
  expect(fallback.body.memory_info.rss).toBeGreaterThan(0);

  const shutdown = curl('-X', 'POST', `${base}/backend/shutdown`, '-H', 'Content-Type: application/json', '-d', '{"model": "demo-legacy"}');
  expect(shutdown.status).toBe(200);
  // LocalAI's answer, with what the stop released added beside it.
  expect(shutdown.body.message).toBe('model stopped');
  expect(Object.keys(shutdown.body).sort()).toEqual(['freed', 'message']);
  expect(shutdown.body.freed.rss_before).toBeGreaterThan(48 * 1024 * 1024);

  const gone = curl(`${base}/backend/monitor`, '-H', 'Content-Type: application/json', '-d', '{"model": "demo-legacy"}');
  expect(gone.status).toBe(500);
  expect(gone.body.error.code).toBe(500);

  const missing = curl(`${base}/backend/monitor`, '-H', 'Content-Type: application/json', '-d', '{}');
  expect(missing.status).toBe(400);

  const load = curl('-X', 'POST', `${base}/backend/load`, '-H', 'Content-Type: application/json', '-d', '{"model": "demo-legacy"}');
  expect(load.status).toBe(200);
});
