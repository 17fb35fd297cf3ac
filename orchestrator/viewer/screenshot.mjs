// Headless check of the viewer page (used by tests/viewer): opens URL in the system's Chromium (driven by
// playwright-core, pinned in package.json; no browser download), waits until the page says
// data-state=ready|error, saves a screenshot of the 3D canvas and one of the whole page, and prints
// {"state", "asset", "banner": str | null, "warnings": [str], "console": [{"type", "text"}],
//  "page_errors": [str], "http_errors": [str], "aborted_requests": [str]} as JSON.
//   node screenshot.mjs URL CANVAS_PNG PAGE_PNG [TIMEOUT_MS]
// CHROMIUM (env) = the browser executable (default /usr/bin/chromium).
import { chromium } from 'playwright-core';

const [url, canvasPng, pagePng, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg ?? 120000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // no GPU here: WebGL on SwiftShader, Chromium's CPU implementation
  args: ['--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist', '--no-sandbox'],
});
const result = { state: 'timeout', asset: null, banner: null, warnings: [], console: [], page_errors: [],
                 http_errors: [], aborted_requests: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('console', (m) => result.console.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => result.page_errors.push(String(e.stack ?? e)));
  page.on('requestfailed', (r) => result.aborted_requests.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) result.http_errors.push(`${r.url()}: HTTP ${r.status()}`); });
  await page.goto(url);
  try {
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout });
  } catch (e) {
    result.page_errors.push(`not ready after ${timeout} ms`);
  }
  result.state = await page.evaluate(() => document.body.dataset.state);
  result.asset = await page.evaluate(() => document.body.dataset.asset ?? null);
  result.banner = await page.evaluate(() => {
    const b = document.getElementById('banner');
    return b.hidden ? null : b.textContent;
  });
  result.warnings = await page.evaluate(() => [...document.querySelectorAll('#warnings li')].map((li) => li.textContent));
  await page.locator('#view3d').screenshot({ path: canvasPng });
  await page.screenshot({ path: pagePng, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
