#!/usr/bin/env node
// The `permit-chain` entry point: runs the TypeScript CLI through tsx, so there is no build step.
require('tsx/cjs/api').register();
require('./cli.ts')
  .main(process.argv)
  .then((code) => {
    process.exitCode = code;
  });
