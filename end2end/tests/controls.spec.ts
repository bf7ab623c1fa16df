import { expect, test, type Page } from '@playwright/test';
import { collectErrors } from './fixtures/console';
import { PanelPage } from './fixtures/panel';

/**
 * Force stop: demo-hung never answers Status, which a shutdown counts as busy, so a plain
 * shutdown is refused after busy_wait (2 s in backends.toml) and the panel offers a forced stop.
 * Each test starts demo-hung again, so the other specs find it running.
 */

async function restart(page: Page, model: string) {
  const response = await page.request.post('/backend/load', { data: { model } });
  expect(response.status()).toBe(200);
}

test.describe('force stop', () => {
  let errors: string[] = [];

  test.beforeEach(async ({ page }) => {
    errors = await collectErrors(page);
  });

  test.afterEach(() => {
    // The refused shutdown answers 500 on purpose; the console says so. Nothing else may fail.
    expect(errors.filter((e) => !e.includes('500'))).toEqual([]);
  });

  test('a refused shutdown of a busy backend offers a confirmed force stop', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    await panel.expectLifecycle('demo-hung', 'running');
    const row = panel.row('demo-hung');
    await expect(row.getByRole('button', { name: 'Force stop demo-hung' })).toHaveCount(0);

    page.once('dialog', (dialog) => dialog.accept());
    await panel.shutDownButton('demo-hung').click();
    await expect(row.locator('.force-stop .refused')).toContainText('still busy', { timeout: 10_000 });
    await panel.expectLifecycle('demo-hung', 'running');
    const force = row.getByRole('button', { name: 'Force stop demo-hung' });
    await expect(force).toBeVisible();

    // The checkbox is the confirmation: without it the form is not sent.
    await force.click();
    await page.waitForTimeout(500);
    await panel.expectLifecycle('demo-hung', 'running', 1_000);

    await row.getByRole('checkbox', { name: /Stop it although it is busy/ }).check();
    await force.click();
    await panel.expectLifecycle('demo-hung', 'stopped', 15_000);
    await expect(force).toHaveCount(0);
    await restart(page, 'demo-hung');
  });
});

test.describe('force stop without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('works with plain form posts', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.expectLifecycle('demo-hung', 'running');
    await panel.shutDownButton('demo-hung').click();
    await expect(page.getByRole('alert').first()).toContainText('still busy', { timeout: 10_000 });
    const row = panel.row('demo-hung');
    await row.getByRole('checkbox', { name: /Stop it although it is busy/ }).check();
    await row.getByRole('button', { name: 'Force stop demo-hung' }).click();
    await expect(page.getByRole('status')).toContainText('demo-hung: model stopped');
    await panel.expectLifecycle('demo-hung', 'stopped', 1_000);
    await restart(page, 'demo-hung');
  });
});

/** How far the page scrolls sideways (0 when it fits). */
async function sidewaysOverflow(page: Page): Promise<number> {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

test.describe('layout', () => {
  test('the stacked memory bar adds up to the reported total it shows', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    const memory = panel.row('demo-chat').locator('.memory');
    await expect(memory.locator('.reported-total')).toBeVisible();
    const total = Number(await memory.locator('.reported-total').getAttribute('data-bytes'));
    const parts = await memory
      .locator('.legend .part-value')
      .evaluateAll((els) => els.map((el) => Number(el.getAttribute('data-bytes'))));
    expect(parts.length).toBeGreaterThanOrEqual(2);
    expect(parts.reduce((a, b) => a + b, 0)).toBe(total);
    const widths = await memory
      .locator('.bar .segment')
      .evaluateAll((els) => els.map((el) => parseFloat((el as HTMLElement).style.width)));
    expect(widths.length).toBe(parts.length);
    expect(Math.abs(widths.reduce((a, b) => a + b, 0) - 100)).toBeLessThan(0.1);
  });

  test('a phone never scrolls sideways, and the check would notice if it did', async ({ page }) => {
    await page.setViewportSize({ width: 390, height: 844 });
    for (const path of ['/', '/models/demo-chat', '/models/broken']) {
      await page.goto(path);
      await expect(page.locator('main')).toBeVisible();
      expect(await sidewaysOverflow(page), path).toBeLessThanOrEqual(0);
    }
    // The same measurement on a page made too wide must fail.
    await page.evaluate(() => {
      const wide = document.createElement('div');
      wide.style.width = '1200px';
      wide.style.height = '1px';
      document.body.appendChild(wide);
    });
    expect(await sidewaysOverflow(page)).toBeGreaterThan(0);
  });
});

test.describe('connection', () => {
  test('a lost connection says since when the page is stale, and recovers', async ({ page }) => {
    const panel = new PanelPage(page);
    await panel.goto();
    await panel.waitForHydration();
    const caption = page.getByTestId('updated');
    await expect(caption).toContainText(/^updated (just now|[12]s ago), at \d\d:\d\d:\d\d$/);
    await page.route('**/_panel/snapshot', (route) => route.abort());
    // The age keeps counting while the server does not answer.
    await expect(caption).toContainText(/^connection lost, retrying… last refresh [3-9]s ago, at \d\d:\d\d:\d\d$/, {
      timeout: 8_000,
    });
    await expect(page.locator('.live-dot.lost')).toBeVisible();
    await page.unroute('**/_panel/snapshot');
    await expect(caption).not.toContainText('connection lost', { timeout: 5_000 });
  });
});
