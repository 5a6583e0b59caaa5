'use strict';
// Retries payment calls; gives up with its own error (the original as its cause).

const api = require('./api');
const site = require('./site');

class RetriesExhausted extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'RetriesExhausted';
  }
}

function chargeWithRetry(body, attempts = 2) {
  let last;
  for (let i = 0; i < attempts; i++) {
    try {
      return api.parseReply(body);
    } catch (err) {
      last = err;
    }
  }
  site.last.retry = site.here(1);
  throw new RetriesExhausted(`gave up after ${attempts} attempts`, { cause: last });
}

async function validateLater(amount) {
  await Promise.resolve();
  return api.validate(amount);
}

module.exports = { chargeWithRetry, validateLater, RetriesExhausted };
