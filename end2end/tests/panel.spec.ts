import { expect, test } from '@playwright/test';
import { expectNoConsoleErrors } from './fixtures/console';
import { PanelPage } from './fixtures/panel';

test.describe('the panel', () => {
  expectNoConsoleErrors();

  test('sends a Content-Security-Policy whose nonce is on the hydration script', async ({ page }) => {
    const response = await page.goto('/');
    const csp = response?.headers()['content-security-policy'] ?? '';
    expect(csp).toContain("frame-ancestors 'none'");
    const nonce = /'nonce-([^']+)'/.exec(csp)?.[1];
    expect(nonce, csp).toBeTruthy();
    // The browser hides nonce attributes from the DOM API; the property keeps the value.
    const scriptNonce = await page.locator('script[type="module"]').first().evaluate((s) => (s as HTMLScriptElement).nonce);
    expect(scriptNonce).toBe(nonce);
    await new PanelPage(page).waitForHydration();
  });

  test('lists every backend with its lifecycle and state', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.expectLifecycle('demo-chat', 'running');
    await panel.expectLifecycle('demo-legacy', 'running');
    await panel.expectLifecycle('broken', 'failed');
    const chat = panel.row('demo-chat');
    await expect(chat.getByRole('rowheader')).toContainText('demo-chat');
    await expect(chat.locator('.badge.lifecycle')).toHaveText('running');
    await expect(chat.locator('.badge.state')).toHaveText('Ready');
    await expect(chat.locator('.legend')).toContainText('weights');
    await expect(chat.locator('.legend')).toContainText('kv_cache');
    // Memory in use is measured for the process tree, with the backend's report beside it.
    await expect(chat.locator('.memory-source')).toHaveText('measured');
    await expect(chat.locator('.reported-total')).toBeVisible();
    await expect(chat.getByTestId('reported-virtual')).toHaveCount(0);
    await expect(page.getByTestId('running-count')).toHaveText('4 of 5');
  });

  test('shows the measured memory of a backend that reports none', async ({ page, request }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    const row = panel.row('demo-silent');
    await expect(row.locator('.memory-source')).toHaveText('measured');
    await expect(row.getByText('the backend reports no memory')).toBeVisible();
    const shown = Number(await row.locator('.memory-total').getAttribute('data-bytes'));
    expect(shown).toBeGreaterThan(40 * 1024 * 1024);
    const api = await (await request.get('/api/backends')).json();
    const silent = api.backends.find((b: { name: string }) => b.name === 'demo-silent');
    expect(silent.observation.status.memory).toBeNull();
    expect(Math.abs(shown - silent.observation.measured.rss)).toBeLessThan(silent.observation.measured.rss * 0.05);
  });

  test('shows generation speed where the backend reports it through GetMetrics', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    await expect(panel.row('demo-chat').getByTestId('generation')).toContainText(/^24\.0 tokens\/s · \d+ tokens generated$/);
    // A backend without GetMetrics shows nothing rather than zeros.
    await panel.expectLifecycle('demo-legacy', 'running');
    await expect(panel.row('demo-legacy').getByTestId('generation')).toHaveCount(0);
  });

  test('shows the same memory as /backend/monitor', async ({ page, request }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    const row = panel.row('demo-chat');
    await expect(row.locator('.memory-total')).toBeVisible();
    const monitored = await (await request.get('/backend/monitor?model=demo-chat')).json();
    expect(monitored.state).toBe(2);
    const weights = monitored.memory.breakdown.weights;
    expect(weights).toBe(96 * 1024 * 1024);
    await expect(row.locator('.legend li', { hasText: 'weights' })).toContainText('96.0 MiB');
    await expect(row.locator('.legend li', { hasText: 'kv_cache' })).toContainText('32.0 MiB');
    // The total is the backend's measured RSS: it may move by a few pages between two looks.
    const shown = Number(await row.locator('.memory-total').getAttribute('data-bytes'));
    expect(Math.abs(shown - monitored.memory.total)).toBeLessThan(monitored.memory.total * 0.02);
    // The stacked bar's parts add up to the total shown.
    const legendBytes = await row.locator('.legend li').count();
    expect(legendBytes).toBeGreaterThanOrEqual(2);
  });

  test('shows process metrics for a backend without Status', async ({ page, request }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    const row = panel.row('demo-legacy');
    await expect(row.locator('.process-metrics')).toContainText('Process metrics');
    await expect(row.locator('.process-metrics')).toContainText('Status unimplemented');
    await expect(row.locator('.process-metrics')).toContainText('RSS');
    await expect(row.locator('.process-metrics')).toContainText('CPU');
    const monitored = await (await request.get('/backend/monitor?model=demo-legacy')).json();
    expect(monitored.memory_info.rss).toBeGreaterThan(48 * 1024 * 1024);
    const shown = Number(await row.locator('.process-metrics dd[data-bytes]').getAttribute('data-bytes'));
    expect(Math.abs(shown - monitored.memory_info.rss)).toBeLessThan(monitored.memory_info.rss * 0.02);
  });

  test('shows a hung backend as such without delaying the page', async ({ page, request }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    const row = panel.row('demo-hung');
    await expect(row.locator('.badge.state')).toHaveText('Status timed out');
    await expect(row.locator('.process-metrics')).toContainText('backend gave none: Status timed out');
    // The page keeps refreshing every second although this backend never answers.
    const refreshed = await page.getByTestId('refreshed-at').textContent();
    await expect(page.getByTestId('refreshed-at')).not.toHaveText(refreshed ?? '', { timeout: 3_000 });
    // /backend/monitor answers within its deadline, with the process fallback.
    const started = Date.now();
    const monitored = await request.get('/backend/monitor?model=demo-hung');
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(monitored.status()).toBe(200);
    expect((await monitored.json()).memory_info.rss).toBeGreaterThan(16 * 1024 * 1024);
  });

  test('shows the error and stderr of a failing backend', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    const row = panel.row('broken');
    await expect(row.getByRole('alert')).toContainText('exit code 2');
    await expect(row.getByRole('alert')).toContainText('model file not found: /models/missing.gguf');
    await expect(panel.startButton('broken')).toBeVisible();
  });

  test('hydrates and updates by itself when a backend changes state', async ({ page, request }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    await panel.expectLifecycle('demo-legacy', 'running');
    const refreshed = await page.getByTestId('refreshed-at').textContent();
    await expect(page.getByTestId('refreshed-at')).not.toHaveText(refreshed ?? '', { timeout: 5_000 });

    const scroll = await page.evaluate(() => window.scrollY);
    const stopped = await request.post('/backend/shutdown', { data: { model: 'demo-legacy' } });
    expect(stopped.status()).toBe(200);
    await panel.expectLifecycle('demo-legacy', 'stopped', 5_000);
    expect(await page.evaluate(() => window.scrollY)).toBe(scroll);

    const started = await request.post('/backend/load', { data: { model: 'demo-legacy' } });
    expect(started.status()).toBe(200);
    await panel.expectLifecycle('demo-legacy', 'running', 5_000);
  });

  test('shuts a backend down from the UI and starts it again', async ({ page, request }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    await panel.expectLifecycle('demo-chat', 'running');
    const before = await (await request.get('/api/backends')).json();
    const pid = before.backends.find((b: { name: string }) => b.name === 'demo-chat').pid;
    expect(pid).toBeGreaterThan(0);

    let question = '';
    page.once('dialog', async (dialog) => {
      question = dialog.message();
      await dialog.accept();
    });
    await panel.shutDownButton('demo-chat').click();
    await panel.expectLifecycle('demo-chat', 'stopped');
    expect(question).toContain('demo-chat');

    expect((await request.get('/backend/monitor?model=demo-chat')).status()).toBe(500);
    const after = await (await request.get('/api/backends')).json();
    const chat = after.backends.find((b: { name: string }) => b.name === 'demo-chat');
    expect(chat.lifecycle).toBe('stopped');
    expect(chat.pid).toBeNull();
    // The row says what the stop released: at least the 128 MiB the demo allocated.
    expect(chat.freed.rss_before).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    const freed = panel.row('demo-chat').getByTestId('freed');
    await expect(freed).toContainText(/^Freed \d+\.\d MiB at the last stop/);
    expect(Number(await freed.locator('[data-bytes]').getAttribute('data-bytes'))).toBeGreaterThanOrEqual(128 * 1024 * 1024);

    await panel.startButton('demo-chat').click();
    await panel.expectLifecycle('demo-chat', 'running');
    expect((await request.get('/backend/monitor?model=demo-chat')).status()).toBe(200);
  });

  test('a declined confirmation leaves the backend running', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    await panel.expectLifecycle('demo-chat', 'running');
    page.once('dialog', (dialog) => dialog.dismiss());
    await panel.shutDownButton('demo-chat').click();
    await page.waitForTimeout(1_500);
    await panel.expectLifecycle('demo-chat', 'running', 1_000);
  });

  test('shows the history and logs of one model', async ({ page }) => {
    await page.goto('/models/demo-chat');
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('demo-chat');
    await expect(page.getByRole('img', { name: /^Memory: now/ })).toBeVisible();
    await expect(page.getByRole('img', { name: /^CPU: now/ })).toBeVisible();
    await expect(page.getByLabel('Log lines')).toContainText('loaded demo-chat.gguf');

    // Axes: values with units, and a time scale ending now.
    const memory = page.locator('figure.chart').filter({ has: page.getByRole('img', { name: /^Memory: now/ }) });
    const cpu = page.locator('figure.chart').filter({ has: page.getByRole('img', { name: /^CPU: now/ }) });
    await expect(memory.locator('.y-axis')).toContainText(/\d (B|KiB|MiB|GiB)/);
    await expect(cpu.locator('.y-axis')).toContainText(/\d %/);
    await expect(memory.locator('.x-axis')).toContainText('now');

    // The value under the pointer, once hydrated (hovering earlier does nothing, so retry).
    const memoryTip = memory.getByRole('status');
    await expect(async () => {
      const chart = memory.getByRole('img');
      const box = (await chart.boundingBox())!;
      await chart.hover({ position: { x: box.width * 0.6, y: box.height / 2 } });
      await expect(memoryTip).toBeVisible({ timeout: 500 });
    }).toPass();
    await expect(memoryTip).toHaveText(/\d\d:\d\d:\d\d \d+(\.\d)? (B|KiB|MiB|GiB)/);
    await expect(memory.locator('.marker')).toBeVisible();
    await page.screenshot({ path: 'test-results/screenshots/model-chart-hover.png', fullPage: true });
    await page.mouse.move(0, 0);
    await expect(memoryTip).toBeHidden();

    // The keyboard reaches each sample too.
    await cpu.getByRole('img').focus();
    await expect(cpu.getByRole('status')).toHaveText(/\d+\.\d %/);
    await page.keyboard.press('Home');
    await expect(cpu.getByRole('status')).toHaveText(/\d+\.\d %/);
    await page.getByRole('link', { name: '← All backends' }).click();
    await expect(page).toHaveURL(/\/$/);
  });

  test('saves screenshots in light and dark', async ({ page }) => {
    const panel = new PanelPage(page);
    await page.setViewportSize({ width: 1280, height: 720 });
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      await panel.goto();
      await panel.waitForHydration();
      await panel.expectLifecycle('demo-chat', 'running');
      await expect(panel.row('demo-legacy').locator('.process-metrics')).toBeVisible();
      await page.screenshot({ path: `test-results/screenshots/panel-${scheme}.png`, fullPage: true });
    }
    await page.setViewportSize({ width: 390, height: 844 });
    await page.emulateMedia({ colorScheme: 'light' });
    await panel.goto();
    await panel.waitForHydration();
    await page.screenshot({ path: 'test-results/screenshots/panel-phone.png', fullPage: true });
    await page.setViewportSize({ width: 1280, height: 720 });
    await page.goto('/models/demo-chat');
    await expect(page.getByRole('img', { name: /^CPU: now/ })).toBeVisible();
    await page.screenshot({ path: 'test-results/screenshots/model-page.png', fullPage: true });
  });
});

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('the server-rendered page lists everything and the form post works', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.expectLifecycle('demo-legacy', 'running');
    await expect(panel.row('demo-chat')).toBeVisible();
    await expect(panel.row('broken').getByRole('alert')).toContainText('exit code 2');

    await panel.shutDownButton('demo-legacy').click();
    await expect(page).toHaveURL(/\/\?notice=/);
    await expect(page.getByRole('status')).toContainText('demo-legacy: model stopped');
    await panel.expectLifecycle('demo-legacy', 'stopped', 1_000);

    await panel.startButton('demo-legacy').click();
    await expect(page.getByRole('status')).toContainText('demo-legacy: model started');
    await panel.expectLifecycle('demo-legacy', 'running', 1_000);
  });
});
