'use strict';
// The payment API client: parses gateway replies (fails inside JSON.parse).

const site = require('./site');

function parseReply(body) {
  site.last.parse = site.here(1);
  return JSON.parse(body);
}

function validate(amount) {
  if (amount <= 0) {
    site.last.validate = site.here(1);
    throw new RangeError(`amount must be positive, got ${amount}`);
  }
  return amount;
}

module.exports = { parseReply, validate };
