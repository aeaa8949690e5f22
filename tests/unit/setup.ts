import '../../src/cli/quiet_tfjs.ts';
