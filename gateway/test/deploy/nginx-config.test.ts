import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { requireTool } from '../helpers/tools.js';
import { composeNginxVariables, prepareEdge, renderTemplates, testConfig, type PreparedEdge } from './helpers/nginx.js';
import { repoPath } from './helpers/repo.js';

const nginx = requireTool('nginx', 'apt-get install nginx');
// render-config.sh renders with envsubst (Debian: gettext-base), as the NGINX image's entrypoint does.
const envsubst = requireTool('envsubst', 'apt-get install gettext-base');
const prepared: PreparedEdge[] = [];
afterAll(() => {
  for (const edge of prepared) rmSync(edge.root, { recursive: true, force: true });
});
const prepare = async (overrides: Record<string, string> = {}) => {
  const edge = await prepareEdge({ gateway: '127.0.0.1:8080', gatewayGrpc: '127.0.0.1:50051' }, overrides);
  prepared.push(edge);
  return edge;
};

describe.skipIf(!nginx)('the NGINX configuration', () => {
  it('passes nginx -t with the values docker-compose.yml gives it and a generated certificate', async () => {
    const edge = await prepare();
    const result = testConfig(nginx!, edge);
    expect(result.output).toContain('test is successful');
    expect(result.status).toBe(0);
  });

  it('keeps nginx variables and leaves no template name behind', async () => {
    const edge = await prepare();
    const site = readFileSync(join(edge.root, 'conf', 'conf.d', 'device-operations.conf'), 'utf8');
    expect(site).not.toMatch(/\$\{?NGINX_/);
    for (const variable of ['$host', '$request_id', '$proxy_add_x_forwarded_for', '$binary_remote_addr', '$correlation_id']) {
      expect(site).toContain(variable);
    }
    expect(site).toContain(`limit_req_zone $binary_remote_addr zone=api:10m rate=${composeNginxVariables().NGINX_API_RATE};`);
  });

  it('is refused by nginx -t when the certificate is not there', async () => {
    const edge = await prepare({ NGINX_TLS_CERTIFICATE: '/nonexistent/fullchain.pem' });
    const result = testConfig(nginx!, edge);
    expect(result.status).not.toBe(0);
    expect(result.output).toContain('/nonexistent/fullchain.pem');
  });

  it('cannot be rendered with a variable missing', () => {
    const variables = composeNginxVariables();
    delete variables.NGINX_GATEWAY_UPSTREAM;
    const out = mkdtempSync(join(tmpdir(), 'device-ops-render-'));
    try {
      expect(() => renderTemplates(out, variables)).toThrow(/uses NGINX_GATEWAY_UPSTREAM, which has no value/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  // The script operators use outside Docker renders what the image's entrypoint would.
  it.skipIf(!envsubst)('renders the same files with nginx/scripts/render-config.sh', async () => {
    const edge = await prepare();
    const out = join(edge.root, 'by-script');
    const variables: Record<string, string> = { ...composeNginxVariables(), NGINX_TLS_CERTIFICATE: '/c.pem', NGINX_TLS_CERTIFICATE_KEY: '/k.pem' };
    const ours = join(edge.root, 'by-test');
    renderTemplates(ours, variables);
    execFileSync(repoPath('nginx', 'scripts', 'render-config.sh'), [out], {
      env: { PATH: process.env.PATH, ...variables },
      stdio: 'pipe',
    });
    for (const file of ['nginx.conf', 'conf.d/device-operations.conf', 'snippets/security-headers.conf']) {
      expect(readFileSync(join(out, file), 'utf8'), file).toBe(readFileSync(join(ours, file), 'utf8'));
    }
    // And it names what is missing instead of rendering empty values.
    const { NGINX_RESOLVER: _dropped, ...incomplete } = variables;
    expect(() =>
      execFileSync(repoPath('nginx', 'scripts', 'render-config.sh'), [join(edge.root, 'never')], {
        env: { PATH: process.env.PATH, ...incomplete },
        stdio: 'pipe',
      }),
    ).toThrow(/set NGINX_RESOLVER/);
  });
});
