import AxeBuilder from '@axe-core/playwright';
import { expect, test, type Page } from '@playwright/test';
import { KEYS_PORT } from '../playwright.config';
import { PanelPage } from './fixtures/panel';

/** axe-core's WCAG 2 A/AA rules and its best practices. */
const RULES = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'];

async function expectNoViolations(page: Page, what: string) {
  const results = await new AxeBuilder({ page }).withTags(RULES).analyze();
  const found = results.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`,
  );
  expect(found, what).toEqual([]);
}

for (const scheme of ['light', 'dark'] as const) {
  test.describe(`accessibility in ${scheme}`, () => {
    test.use({ colorScheme: scheme });

    test('the panel, a model page and a failed model page have no violations', async ({ page }) => {
      const panel = new PanelPage(page);
      await panel.goto();
      await panel.waitForHydration();
      await panel.expectLifecycle('demo-chat', 'running');
      await expectNoViolations(page, `/ in ${scheme}`);
      for (const path of ['/models/demo-chat', '/models/broken', '/models/nobody']) {
        await page.goto(path);
        await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
        await expectNoViolations(page, `${path} in ${scheme}`);
      }
    });

    test('the sign-in page has no violations', async ({ page }) => {
      await page.goto(`http://127.0.0.1:${KEYS_PORT}/sign-in`);
      await expect(page.getByLabel('API key')).toBeVisible();
      await expectNoViolations(page, `/sign-in in ${scheme}`);
    });

    test('the API reference has no violations', async ({ page }) => {
      await page.goto('/api/docs');
      await expect(page.getByRole('heading', { level: 1 })).toHaveText('API reference');
      await expect(page.locator('#schema-PanelSnapshot')).toBeVisible();
      await expectNoViolations(page, `/api/docs in ${scheme}`);
    });
  });
}
