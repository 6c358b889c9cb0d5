// Once per fault run: libvirtd and virtlogd running (each test file starts its own Temporal server).
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync('bash', ['scripts/ensure-libvirtd.sh'], { stdio: 'inherit' });
}
