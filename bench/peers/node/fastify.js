'use strict'
// The fastify validating peer (bench/run.sh): fastify with ajv and @fastify/reply-from in
// front of Flextell's POST /v1/conversations, written the way the fastify documentation
// suggests, with the checks of the nginx + Lua peer:
//   - `Authorization: Bearer <token>` present (an onRequest hook, before any parsing) -> 401
//   - `X-Tenant` an integer (the route's headers schema; header values are strings, so
//     this ajv instance coerces them)                                                 -> 422
//   - the body against schemas/flextell/create_conversation.body.json (the third argument)
//     with strict options: no coercion, no defaults, no removed properties, first error
//     only (fastify's own default, against the allErrors DoS)                          -> 422
// A valid request is forwarded by reply-from (undici, keep-alive pool) and the upstream's
// answer relayed. One process, one event loop: the one-worker comparison.
const fs = require('node:fs')
const Fastify = require('fastify')
const Ajv = require('ajv').default
const { args, envelope, hasBearer } = require('./common')

const { port, upstream, file } = args()
const bodySchema = JSON.parse(fs.readFileSync(file, 'utf8'))
// The file names draft 2020-12; ajv's default class is draft 7, where the keywords this
// schema uses mean the same.
delete bodySchema.$schema

const strict = new Ajv({ coerceTypes: false, useDefaults: false, removeAdditional: false, allErrors: false })
const headers = new Ajv({ coerceTypes: true, allErrors: false })

const app = Fastify({ logger: false, keepAliveTimeout: 120000, bodyLimit: 1024 * 1024 })
app.setValidatorCompiler(({ schema, httpPart }) =>
  (httpPart === 'body' ? strict : headers).compile(schema))
app.register(require('@fastify/reply-from'), {
  base: upstream,
  undici: { connections: 128, pipelining: 1, keepAliveTimeout: 120000 }
})

app.setErrorHandler((err, request, reply) => {
  if (err.validation) {
    const where = err.validationContext === 'body' ? 'body' : 'header'
    const message = err.validation.map((e) => `${where}${e.instancePath.replaceAll('/', '.')} ${e.message}`)
    return reply.code(422).send(envelope(422, message))
  }
  const status = err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 502
  return reply.code(status).send(envelope(status, err.message))
})

app.post('/v1/conversations', {
  schema: {
    headers: {
      type: 'object',
      required: ['x-tenant'],
      properties: { 'x-tenant': { type: 'integer' } }
    },
    body: bodySchema
  },
  onRequest: (request, reply, done) => {
    if (!hasBearer(request.headers.authorization)) {
      reply.code(401).send(envelope(401, 'missing or malformed bearer token'))
      return
    }
    done()
  }
}, (request, reply) => reply.from(request.url))

app.listen({ port, host: '127.0.0.1' }).catch((err) => {
  console.error(err)
  process.exit(1)
})
