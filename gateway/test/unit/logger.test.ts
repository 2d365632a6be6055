import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/infra/logger.js';
import { LogCapture } from '../helpers/log-capture.js';

describe('logger', () => {
  it('logs an error as name, message, code and stack', () => {
    const logs = new LogCapture();
    createLogger({ level: 'info', stream: logs }).error('it failed', { err: Object.assign(new Error('disk full'), { code: 'ENOSPC' }) });
    expect(logs.lines[0]).toMatchObject({ level: 'error', message: 'it failed', err: { name: 'Error', message: 'disk full', code: 'ENOSPC' } });
    expect(String((logs.lines[0]!.err as { stack: string }).stack)).toContain('disk full');
  });

  it('bounds a huge error message, keeping its head and the cause at its end', () => {
    const logs = new LogCapture();
    const huge = `insert into session_events ${'(?, ?, ?, ?, ?), '.repeat(5000)} - too many terms in compound SELECT`;
    createLogger({ level: 'info', stream: logs }).error('write failed', { err: new Error(huge) });
    const message = (logs.lines[0]!.err as { message: string }).message;
    expect(message.length).toBeLessThan(2100);
    expect(message.startsWith('insert into session_events')).toBe(true);
    expect(message.endsWith('too many terms in compound SELECT')).toBe(true);
    expect(message).toContain(`…[${huge.length - 1500} characters]…`);
  });
});
