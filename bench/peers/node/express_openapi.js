'use strict'
// The express-openapi-validator peer (bench/run.sh): express with express-openapi-validator
// fed config/openapi/flextell.yaml (the third argument), the document schemagate's OpenAPI
// routes come from, and a plain keep-alive http.request forward of what passes.
//   - the document's `bearerAuth` (http, bearer) security: `Authorization` must be present
//     and start with `Bearer`                                            -> 401 (its status)
//   - the document's parameters (X-Tenant: number, required) and body schema
//     (CreateConversation), all errors                   -> its 400, answered here as 422
// Response validation is off (the gateways compared do not validate answers). One process,
// one event loop: the one-worker comparison.
const http = require('node:http')
const express = require('express')
const OpenApiValidator = require('express-openapi-validator')
const { args, envelope } = require('./common')

const { port, upstream, file } = args()
const target = new URL(upstream)
const agent = new http.Agent({ keepAlive: true, maxSockets: 128 })

const app = express()
app.disable('x-powered-by')
app.disable('etag')
// Keeps the bytes as received, so the upstream gets the body unchanged.
app.use(express.json({ limit: '1mb', verify: (req, res, buf) => { req.rawBody = buf } }))
app.use(OpenApiValidator.middleware({
  apiSpec: file,
  validateRequests: true,
  validateResponses: false,
  validateSecurity: true
}))

app.post('/v1/conversations', (req, res, next) => {
  const headers = { ...req.headers, host: target.host }
  delete headers.connection
  headers['content-length'] = String(req.rawBody ? req.rawBody.length : 0)
  const out = http.request({
    agent,
    hostname: target.hostname,
    port: target.port,
    method: req.method,
    path: req.originalUrl,
    headers
  }, (answer) => {
    res.writeHead(answer.statusCode, answer.headers)
    answer.pipe(res)
  })
  out.on('error', next)
  out.end(req.rawBody)
})

// express-openapi-validator answers a failed validation with 400 and `errors`; schemagate
// and the other peers answer 422, so that status is chosen here.
app.use((err, req, res, next) => {
  if (res.headersSent) return next(err)
  let status = err.status || 502
  let message = err.message
  if (status === 400 && Array.isArray(err.errors)) {
    status = 422
    message = err.errors.map((e) => `${e.path} ${e.message}`)
  }
  res.status(status).json(envelope(status, message))
})

const server = app.listen(port, '127.0.0.1')
server.keepAliveTimeout = 120000
server.on('error', (err) => {
  console.error(err)
  process.exit(1)
})
