// make web-check's browser side: open the page in one headless browser, run every file of the bundle on its
// golden vectors (window.videoseal.goldenRun) on each backend the page uses (WASM, and WebGPU where the browser
// has an adapter), then use the page as a person would: choose a photo, embed a message, download the
// watermarked PNG, detect it again, detect the unmarked photo, and give it a non-image.
// Usage: node check.mjs chromium|firefox BROWSER_BINARY BASE_URL OUT.json PHOTO NOT_AN_IMAGE MESSAGE BACKENDS [EXTRA_URL...]
// (BACKENDS: wasm,webgpu or wasm)
// Writes OUT.json (raw outputs and what the page showed); web/check.py judges them.
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const [name, exe, base, outFile, photo, notImage, message, backends, ...extra] = process.argv.slice(2);
const t0 = Date.now();
const SKIP = Symbol('skip');  // the page's end-to-end steps do not apply to this bundle (it has no embedder)
const browser = await puppeteer.launch({
  browser: name === 'firefox' ? 'firefox' : 'chrome',
  executablePath: exe,
  headless: true,
  // Chromium's software WebGPU adapter (SwiftShader over Vulkan, libvk_swiftshader.so of the unpacked tree):
  // the page picks WebGPU whenever the browser has an adapter, so that backend is checked too.
  args: name === 'firefox' ? [] : ['--no-sandbox', '--disable-dev-shm-usage', '--enable-unsafe-webgpu',
    '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan'],
  protocolTimeout: 900000,
  env: process.env,
});
const result = {browser: name, version: await browser.version(), console_errors: [], e2e: {}};
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(300000);
  page.on('console', (m) => { if (m.type() === 'error') result.console_errors.push(m.text()); });
  page.on('pageerror', (e) => result.console_errors.push(String(e.message || e)));
  await page.goto(`${base}/?accelerator=wasm`, {waitUntil: 'load'});
  await page.waitForFunction(() => document.body.dataset.ready === '1' || document.getElementById('status').className === 'error');
  result.status = await page.$eval('#status', (e) => e.textContent);
  if (!result.status.startsWith('ready')) throw new Error(`the page did not load: ${result.status}`);
  result.golden = await page.evaluate((urls) => window.videoseal.goldenRun('/bundle', urls), extra);
  result.backends = {wasm: result.golden};
  if (result.golden.webgpu && backends.split(',').includes('webgpu')) {
    try {
      result.backends.webgpu = await page.evaluate(() => window.videoseal.goldenRun('/bundle', [], 1, 'webgpu'));  // software: one timed run
    } catch (e) {
      result.backends.webgpu = {error: String(e.message || e)};
    }
  }

  const e2e = result.e2e;
  if (!Object.keys(result.golden.embedder || {}).length) {
    e2e.skipped = 'the bundle has no embedder: the page cannot embed';
    throw SKIP;
  }
  const count = (key) => page.evaluate((k) => Number(document.body.dataset[k] || 0), key);
  const until = (key, n) => page.waitForFunction((k, v) => Number(document.body.dataset[k] || 0) >= v, {}, key, n);
  await (await page.$('#embed-file')).uploadFile(photo);
  await until('covers', 1);
  await page.type('#message', message);
  await page.click('#embed-btn');
  await until('embedded', 1);
  e2e.embed_error = await page.$eval('#embed-error', (e) => e.textContent);
  e2e.psnr_db = Number(await page.$eval('#psnr', (e) => e.textContent));
  e2e.embedded_bits = await page.$eval('#embedded-bits', (e) => e.textContent);
  // The download link's bytes, exactly what "Download" saves (a blob: URL read inside the page).
  const b64 = await page.evaluate(async () => {
    const bytes = new Uint8Array(await (await fetch(document.getElementById('download').href)).arrayBuffer());
    let s = '';
    for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
    return btoa(s);
  });
  const saved = path.join(path.dirname(outFile), `watermarked-${name}.png`);
  fs.writeFileSync(saved, Buffer.from(b64, 'base64'));
  e2e.downloaded = saved;
  const read = async () => ({
    verdict: await page.$eval('#verdict', (e) => e.textContent),
    bits: await page.$eval('#bits', (e) => e.textContent),
    accuracy: await page.$eval('#accuracy', (e) => e.textContent),
    pvalue: Number(await page.$eval('#pvalue', (e) => e.textContent)),
    mask_logit: Number(await page.$eval('#mask', (e) => e.textContent)),
  });
  await (await page.$('#detect-file')).uploadFile(saved);
  await until('detected', 1);
  e2e.detect_downloaded = await read();
  await (await page.$('#detect-file')).uploadFile(photo);
  await until('detected', 2);
  e2e.detect_unmarked = await read();
  await (await page.$('#detect-file')).uploadFile(notImage);
  await until('detectError', 1);
  e2e.not_an_image = await page.$eval('#detect-error', (e) => e.textContent);
} catch (e) {
  if (e !== SKIP) result.error = String(e.message || e);
} finally {
  result.seconds = (Date.now() - t0) / 1000;
  fs.writeFileSync(outFile, JSON.stringify(result));
  await browser.close();
}
