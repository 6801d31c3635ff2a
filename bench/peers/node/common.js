'use strict'
// Shared by the Node validating peers (bench/peers/node/*.js): the command line and the
// envelope schemagate answers with, so every peer's 401/422 looks alike.
//
//   node PEER.js PORT UPSTREAM_URL SCHEMA_OR_DOCUMENT
const path = require('node:path')

function args () {
  const [port, upstream, file] = process.argv.slice(2)
  if (!port || !upstream || !file) {
    console.error(`usage: node ${path.basename(process.argv[1])} PORT UPSTREAM_URL FILE`)
    process.exit(2)
  }
  return { port: Number(port), upstream, file: path.resolve(file) }
}

const ERRORS = { 400: 'Bad Request', 401: 'Unauthorized', 415: 'Unsupported Media Type', 422: 'Unprocessable Entity' }

// `message` is an array of violations for 422 and one string otherwise, as in schemagate.
function envelope (status, message) {
  return { statusCode: status, message, error: ERRORS[status] || 'Error' }
}

// `Authorization: Bearer <token>` present, the check every peer makes (no key lookup).
function hasBearer (value) {
  return typeof value === 'string' && /^Bearer \S/.test(value)
}

module.exports = { args, envelope, hasBearer }
