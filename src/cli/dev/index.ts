// Development and test machinery, apart from the operator commands: the local dev stack (`dev up|down|status`),
// test-VM lifecycle (`vm list|create|delete`) and the demo. main.ts registers them on the same `livemerge`
// program, so the commands are the same as ever.
export { registerDemo } from './demo';
export { registerDev } from './stack';
export { registerVm } from './vm';
