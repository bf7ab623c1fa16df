import { expect, test, type Page } from '@playwright/test';
import { ADMIN_KEY, KEYS_PORT, READ_KEY } from '../playwright.config';
import { collectErrors } from './fixtures/console';
import { PanelPage } from './fixtures/panel';

const base = `http://127.0.0.1:${KEYS_PORT}`;

async function signIn(page: Page, key: string) {
  await page.goto('/');
  await expect(page).toHaveURL(/\/sign-in$/);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

test.describe('with API keys', () => {
  test.use({ baseURL: base });
  let errors: string[] = [];

  test.beforeEach(async ({ page }) => {
    errors = await collectErrors(page);
  });

  test.afterEach(() => {
    expect(errors, 'no console errors or CSP violations').toEqual([]);
  });

  test('API requests without a key get 401 and the sign-in page needs none', async ({ request }) => {
    const denied = await request.get('/api/backends');
    expect(denied.status()).toBe(401);
    expect((await denied.json()).error.type).toBe('authentication_error');
    expect((await request.get('/healthz')).status()).toBe(200);
    const allowed = await request.get('/api/backends', { headers: { 'x-api-key': READ_KEY } });
    expect(allowed.status()).toBe(200);
  });

  test('a read key signs in, sees the panel hydrated, and cannot shut down', async ({ page, context }) => {
    await signIn(page, READ_KEY);
    await expect(page).toHaveURL(`${base}/`);
    const panel = new PanelPage(page);
    await panel.waitForHydration();
    await panel.expectLifecycle('demo-keys', 'running');
    await expect(panel.shutDownButton('demo-keys')).toBeDisabled();
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'backend_monitor_session');
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    expect(session?.value).not.toContain(READ_KEY);
    // The page's own fetch with the read session is refused by the server as well.
    const status = await page.evaluate(async () => {
      const response = await fetch('/backend/shutdown', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'demo-keys' }),
      });
      return response.status;
    });
    expect(status).toBe(403);
    // The 403 shows up as a failed resource load in the console; it is expected here.
    errors = errors.filter((e) => !e.includes('403'));
  });

  test('an admin key signs in and may shut down and start', async ({ page }) => {
    await signIn(page, ADMIN_KEY);
    const panel = new PanelPage(page);
    await panel.waitForHydration();
    await panel.expectLifecycle('demo-keys', 'running');
    await expect(panel.shutDownButton('demo-keys')).toBeEnabled();
    page.once('dialog', (dialog) => dialog.accept());
    await panel.shutDownButton('demo-keys').click();
    await panel.expectLifecycle('demo-keys', 'stopped');
    await panel.startButton('demo-keys').click();
    await panel.expectLifecycle('demo-keys', 'running');
  });

  test('a wrong key is refused with a message', async ({ page }) => {
    await signIn(page, 'not-the-key');
    await expect(page.getByRole('alert')).toContainText('not valid');
    // The 401 of the form post is logged by the browser; it is the expected answer.
    errors = errors.filter((e) => !e.includes('401'));
  });
});

test.describe('with API keys, without JavaScript', () => {
  test.use({ baseURL: base, javaScriptEnabled: false });

  test('signing in works and returns to the page asked for', async ({ page }) => {
    await page.goto('/models/demo-keys');
    await expect(page).toHaveURL(/\/sign-in\?return_to=%2Fmodels%2Fdemo-keys$/);
    await page.getByLabel('API key').fill(READ_KEY);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page).toHaveURL(`${base}/models/demo-keys`);
    await expect(page.getByRole('heading', { name: 'demo-keys' })).toBeVisible();
  });
});
