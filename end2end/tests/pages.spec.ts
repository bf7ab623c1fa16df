import { expect, test } from '@playwright/test';
import { PAGED_BACKENDS, PAGES_PORT } from '../playwright.config';
import { expectNoConsoleErrors } from './fixtures/console';
import { PanelPage } from './fixtures/panel';

test.use({ baseURL: `http://127.0.0.1:${PAGES_PORT}` });

test.describe('pages of the table', () => {
  expectNoConsoleErrors();

  test('a later page stays on its rows through refreshes, and the links move between pages', async ({ page }) => {
    const panel = new PanelPage(page);
    await page.goto('/?page=2');
    await panel.waitForHydration();
    const rows = page.locator('tbody tr');
    await expect(rows).toHaveCount(PAGED_BACKENDS - 100);
    await expect(rows.first()).toHaveAttribute('data-model', 'p100');
    await expect(page.getByTestId('page-range')).toHaveText(
      `Backends 101–${PAGED_BACKENDS} of ${PAGED_BACKENDS} · page 2 of 2`,
    );
    // The totals count every backend, not only this page's.
    await expect(page.getByTestId('running-count')).toContainText(`of ${PAGED_BACKENDS}`);

    // Two refreshes later (one a second), the page still shows its own rows: the browser asks
    // for page 2, not for the first page.
    const refreshedAt = page.getByTestId('refreshed-at');
    const first = await refreshedAt.textContent();
    await expect(refreshedAt).not.toHaveText(first ?? '', { timeout: 10_000 });
    await expect(rows).toHaveCount(PAGED_BACKENDS - 100);
    await expect(rows.first()).toHaveAttribute('data-model', 'p100');

    await page.getByRole('link', { name: '← Previous' }).click();
    await expect(page).toHaveURL(/\/\?page=1$/);
    await expect(rows).toHaveCount(100);
    await expect(rows.first()).toHaveAttribute('data-model', 'p000');
    await expect(page.getByRole('link', { name: 'Next →' })).toBeVisible();
  });
});
