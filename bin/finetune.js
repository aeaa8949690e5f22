#!/usr/bin/env node
// The `finetune` command: TypeScript sources run through tsx, so no build step stands between
// `npm install` and `npx finetune`.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
