// Drives the unmodified posthog-node SDK against a Sightline server (tests/server/test_node_sdk.py).
// Usage: node node_sdk.mjs '<json config>'  → prints one JSON line with what the SDK saw.
import { PostHog } from 'posthog-node'

const cfg = JSON.parse(process.argv[2])
const errors = []
const client = new PostHog(cfg.token, {
  host: cfg.host,
  personalApiKey: cfg.personalApiKey,  // enables local evaluation of flags
  flushAt: 50,
  flushInterval: 0,
  fetchRetryCount: 0,
  featureFlagsPollingInterval: 60000,
})
client.on('error', (e) => errors.push(String(e && e.message || e)))

const run = cfg.run
const anon = `anon-${run}`
const user = `user-${run}@example.com`
for (let i = 0; i < 120; i++) {
  client.capture({ distinctId: `node-${run}-${i % 5}`, event: `node-event-${run}`,
                   properties: { i, nested: { a: [1, 2] }, text: 'žluťoučký 🐎' } })
}
client.capture({ distinctId: anon, event: '$pageview', properties: { $current_url: 'https://a.io/' } })
client.alias({ distinctId: user, alias: anon })
client.identify({ distinctId: user, properties: { email: user, plan: 'pro' } })
client.groupIdentify({ groupType: 'company', groupKey: `acme-${run}`, properties: { name: 'Acme' } })
client.capture({ distinctId: user, event: 'project created', groups: { company: `acme-${run}` } })

// flags: remote (/flags) and local (definitions with the personal API key) for the same ids
const remote = {}
const local = {}
for (const id of cfg.flagIds) {
  remote[id] = await client.getFeatureFlag(cfg.flagKey, id, { onlyEvaluateLocally: false,
                                                              sendFeatureFlagEvents: false })
}
await client.reloadFeatureFlags()
for (const id of cfg.flagIds) {
  local[id] = await client.getFeatureFlag(cfg.flagKey, id, { onlyEvaluateLocally: true,
                                                             sendFeatureFlagEvents: false })
}
const payload = await client.getFeatureFlagPayload(cfg.flagKey, cfg.flagIds[0], undefined,
                                                   { onlyEvaluateLocally: true })
// one call that records $feature_flag_called
const called = await client.getFeatureFlag(cfg.flagKey, user)
await client.shutdown()
console.log(JSON.stringify({ errors, remote, local, payload, called }))
