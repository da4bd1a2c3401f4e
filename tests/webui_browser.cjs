// Open WebUI 0.12.4 as its users meet it, in headless Debian chromium driven by playwright-core (tests/test_webui_e2e.py).
// Reads its task as JSON on stdin; writes screenshots into `shots` and its findings as one JSON line on stdout.
// The admin signs up on the first visit, creates a plain user in the admin panel, and each of them signs in, lists the
// models and chats; the user also attaches a document. Every request the page makes outside Open WebUI is recorded.
const { chromium } = require('playwright-core');

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ANSWER_MS = 60000;

async function main() {
  const task = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const { url, admin, user } = task;
  const browser = await chromium.launchPersistentContext(task.profile, {
    executablePath: task.chromium, args: FLAGS, headless: true, viewport: { width: 1280, height: 900 },
  });
  const out = { external: [], models: {}, answers: {}, versionUpdates: null, steps: [] };
  let shot = 0;
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(ANSWER_MS);
  browser.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(url) && !u.startsWith('data:') && !u.startsWith('blob:')) out.external.push(u);
  });
  const snap = async (name) => {
    shot += 1;
    await page.screenshot({ path: `${task.shots}/${String(shot).padStart(2, '0')}-${name}.png` });
    out.steps.push(name);
  };
  const dismissNews = async () => {
    const ok = page.getByRole('button', { name: "Okay, Let's Go!" });
    if (await ok.count()) await ok.click();
  };
  const signIn = async (who) => {
    await page.goto(`${url}/auth`, { waitUntil: 'domcontentloaded' });
    await page.fill('#email', who.email);
    await page.fill('#password', who.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForSelector('#chat-input');
    await dismissNews();
  };
  const signOut = async () => {
    await page.evaluate(() => localStorage.removeItem('token'));
    await browser.clearCookies();
  };
  const listModels = async (who) => {
    await page.goto(`${url}/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-selector-model-button');
    await page.click('#model-selector-model-button');
    // a user who may use no model gets an empty list (no option appears)
    await page.waitForSelector('[role=option][id^=model-option-]', { timeout: 10000 }).catch(() => null);
    out.models[who] = await page.$$eval('[role=option][id^=model-option-]', (es) =>
      es.map((e) => e.getAttribute('aria-label').replace(/^Select (.*) model$/, '$1')));
    await snap(`${who}-models`);
    await page.keyboard.press('Escape');
  };
  const chat = async (who, model, text, file) => {
    await page.goto(`${url}/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-selector-model-button');
    await page.click('#model-selector-model-button');
    const option = page.locator(`[role=option][aria-label="Select ${model} model"]`);
    if (!(await option.count())) {
      out.answers[`${who}:${model}`] = null; // not offered: the test says so
      await snap(`${who}-no-${model}`);
      return;
    }
    await option.click();
    if (file) {
      const uploaded = page.waitForResponse((r) => r.request().method() === 'POST' && /\/api\/v1\/files\/(\?|$)/.test(r.url()));
      await page.locator('input[type=file]').first().setInputFiles(file);
      const { id } = await (await uploaded).json();
      // Open WebUI extracts and embeds the document in the background; its own status says when it is done
      out.upload = await page.evaluate(async ([fileId, ms]) => {
        const end = Date.now() + ms;
        for (;;) {
          const r = await fetch(`/api/v1/files/${fileId}/process/status`, { headers: { Authorization: `Bearer ${localStorage.token}` } });
          const s = await r.json();
          if (s.status === 'completed' || s.status === 'failed' || Date.now() > end) return s;
          await new Promise((done) => setTimeout(done, 500));
        }
      }, [id, ANSWER_MS]);
      if (out.upload.status !== 'completed') throw new Error(`upload not processed: ${JSON.stringify(out.upload)}`);
      await snap(`${who}-attached`);
    }
    await page.click('#chat-input');
    await page.keyboard.type(text);
    await page.keyboard.press('Enter');
    const answer = page.getByText(/backend=\S+ model=\S+ rid=/).last();
    await answer.waitFor({ timeout: ANSWER_MS });
    // the stream ends with the fake server's last token
    await page.waitForFunction(() => /\bt4\b/.test(document.body.innerText), null, { timeout: ANSWER_MS });
    out.answers[`${who}:${model}`] = await answer.innerText();
    await snap(`${who}-chat-${model}`);
  };

  // the admin: the first visitor, who signs up
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.getByRole('button', { name: 'Get started' }).click();
  await page.fill('#name', admin.name);
  await page.fill('#email', admin.email);
  await page.fill('#password', admin.password);
  await snap('admin-signup');
  await page.getByRole('button', { name: 'Create Admin Account' }).click();
  await page.waitForSelector('#chat-input');
  await dismissNews();
  await snap('admin-signed-in');
  out.versionUpdates = await page.evaluate(async () => {
    const r = await fetch('/api/version/updates', { headers: { Authorization: `Bearer ${localStorage.token}` } });
    return r.json();
  });
  await listModels('admin');
  await chat('admin', task.adminModel, task.adminText);

  // the admin creates the plain user in the admin panel
  await page.goto(`${url}/admin/users`, { waitUntil: 'domcontentloaded' });
  await page.getByRole('button', { name: 'Add User' }).click();
  await page.selectOption('select[aria-label=Role]', 'user');
  await page.fill('input[aria-label=Name]', user.name);
  await page.fill('input[aria-label=Email]', user.email);
  await page.fill('input[type=password][placeholder="Enter Your Password"]', user.password);
  await snap('admin-adds-user');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText(user.email).first().waitFor();
  await snap('admin-users');
  await signOut();

  // the plain user
  await signIn(user);
  await snap('user-signed-in');
  await listModels('user');
  await chat('user', task.userModel, task.userText, task.document);

  await browser.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
