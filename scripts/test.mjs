// `npm test`: set up what is missing, then run every suite — the gateway's
// type check and vitest suites, the workers' pytest suite — and end with one
// summary line of passed/failed/skipped counts. Exits non-zero if anything
// failed.
import { mkdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setup } from './setup.mjs';
import { fail, paths, run, step } from './lib/project.mjs';

const results = join(paths.root, 'test-results');

async function suite(name, command, args, options, read) {
  step(`Running ${name}`);
  let crashed = null;
  try {
    await run(command, args, options);
  } catch (error) {
    crashed = error;
  }
  const counts = read(crashed);
  if (!counts) return { name, passed: 0, failed: 1, skipped: 0, note: `did not report results (${crashed?.message})` };
  // A runner that failed without a failing test (collection error, crash) still fails the run.
  if (crashed && counts.failed === 0) counts.failed = 1;
  return { name, ...counts };
}

function readVitest() {
  const file = join(results, 'vitest.json');
  if (!existsSync(file)) return null;
  const report = JSON.parse(readFileSync(file, 'utf8'));
  // A file that fails to load has no failed test but is a failure too.
  const brokenFiles = (report.testResults ?? []).filter(
    (f) => f.status === 'failed' && !(f.assertionResults ?? []).some((t) => t.status === 'failed'),
  ).length;
  return {
    passed: report.numPassedTests,
    failed: report.numFailedTests + brokenFiles,
    skipped: report.numPendingTests + report.numTodoTests,
  };
}

function readJunit(file) {
  return () => {
    if (!existsSync(file)) return null;
    const xml = readFileSync(file, 'utf8');
    const attr = (name) =>
      [...xml.matchAll(new RegExp(`<testsuite\\b[^>]*\\b${name}="(\\d+)"`, 'g'))].reduce((sum, m) => sum + Number(m[1]), 0);
    const failed = attr('failures') + attr('errors');
    const skipped = attr('skipped');
    return { passed: attr('tests') - failed - skipped, failed, skipped };
  };
}

try {
  await setup();
} catch (error) {
  fail(error.message);
}
rmSync(results, { recursive: true, force: true });
mkdirSync(results, { recursive: true });

const suites = [];
// The type check counts as one check: it passes, or the crash rule in suite() fails it.
suites.push(
  await suite(
    'gateway type check (tsc)',
    join(paths.root, 'node_modules', '.bin', 'tsc'),
    ['-p', join(paths.gateway, 'tsconfig.json')],
    {},
    (crashed) => ({ passed: crashed ? 0 : 1, failed: crashed ? 1 : 0, skipped: 0 }),
  ),
);
suites.push(
  await suite(
    'gateway suites (vitest)',
    join(paths.root, 'node_modules', '.bin', 'vitest'),
    ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${join(results, 'vitest.json')}`],
    { cwd: paths.gateway },
    readVitest,
  ),
);
suites.push(
  await suite(
    'python-workers suites (pytest)',
    paths.venvPython,
    ['-m', 'pytest', `--junitxml=${join(results, 'pytest.xml')}`],
    { cwd: paths.workers },
    readJunit(join(results, 'pytest.xml')),
  ),
);

const total = suites.reduce(
  (sum, s) => ({ passed: sum.passed + s.passed, failed: sum.failed + s.failed, skipped: sum.skipped + s.skipped }),
  { passed: 0, failed: 0, skipped: 0 },
);
for (const s of suites) {
  const note = s.note ? ` — ${s.note}` : '';
  process.stdout.write(`  ${s.failed ? '✗' : '✓'} ${s.name}: ${s.passed} passed, ${s.failed} failed, ${s.skipped} skipped${note}\n`);
}
process.stdout.write(`npm test: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped\n`);
process.exit(total.failed > 0 ? 1 : 0);
