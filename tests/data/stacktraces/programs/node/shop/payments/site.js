'use strict';
// Where the program knows it fails: V8's structured call sites, not a parsed string.

function here(offset) {
  const saved = Error.prepareStackTrace;
  Error.prepareStackTrace = (_err, sites) => sites;
  const holder = {};
  Error.captureStackTrace(holder, here);
  const site = holder.stack[0];
  Error.prepareStackTrace = saved;
  return { file: site.getFileName(), line: site.getLineNumber() + offset, function: site.getFunctionName() || '' };
}

module.exports = { here, last: {} };
