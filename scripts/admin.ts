/**
 * Admin CLI: a thin client of the service's admin HTTP API.
 *
 *   npm run admin -- create-user <name> [quota]
 *   npm run admin -- user <id>
 *   npm run admin -- topup <id> <quota>
 *   npm run admin -- new-key <id>
 *   npm run admin -- revoke-key <id> <key-id>
 *   npm run admin -- logs [user-id]
 *   npm run admin -- models
 *   npm run admin -- set-model <model-id> '<json patch>'
 *
 * Reads GATEWAY_URL (default http://127.0.0.1:$PORT, PORT default 8080) and ADMIN_TOKEN.
 */
try {
  process.loadEnvFile('.env');
} catch {
  // no .env: the environment alone
}
const base = process.env.GATEWAY_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`;
const token = process.env.ADMIN_TOKEN;

const commands: Record<string, (args: string[]) => [string, string, unknown?]> = {
  'create-user': ([name, quota = '0']) => ['POST', '/admin/users', { name, quota: Number(quota) }],
  user: ([id]) => ['GET', `/admin/users/${id}`],
  topup: ([id, quota]) => ['POST', `/admin/users/${id}/topup`, { quota: Number(quota) }],
  'new-key': ([id]) => ['POST', `/admin/users/${id}/keys`],
  'revoke-key': ([id, keyId]) => ['DELETE', `/admin/users/${id}/keys/${keyId}`],
  logs: ([userId]) => ['GET', `/admin/logs${userId ? `?user_id=${userId}` : ''}`],
  models: () => ['GET', '/admin/models'],
  'set-model': ([id, patch = '{}']) => ['PUT', `/admin/models/${id}`, JSON.parse(patch)],
};

async function main() {
  const [command, ...args] = process.argv.slice(2);
  const build = commands[command ?? ''];
  if (!build) {
    process.stderr.write(`usage: npm run admin -- <${Object.keys(commands).join('|')}> [args]\n`);
    process.exit(2);
  }
  if (!token) {
    process.stderr.write('ADMIN_TOKEN is not set: export the token the service was started with.\n');
    process.exit(2);
  }
  const [method, path, body] = build(args);
  const url = base + path;
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    // fetch says only "fetch failed"; the URL and the cause are what the operator needs.
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    process.stderr.write(
      `cannot reach the service at ${url} (${cause?.code ?? cause?.message ?? (err as Error).message}).\n` +
        'Is it running? This tries GATEWAY_URL, else http://127.0.0.1:$PORT (PORT default 8080), ' +
        'both also read from ./.env.\n',
    );
    process.exit(1);
  }
  const text = await res.text();
  process.stdout.write(`${text}\n`);
  if (!res.ok) process.exit(1);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(1);
});
