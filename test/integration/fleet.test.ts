// The one read behind every cross-host check (fleetDomainXmls) and the host list it reads: it fails
// closed, naming the host, whenever it cannot see every configured host's domains.
import { describe, expect, it } from 'vitest';
import { formatHostUris, loadConfig, parseHostUris } from '../../src/config';
import type { Domain, LibvirtConnection } from '../../src/libvirt';
import { LibvirtError } from '../../src/libvirt';
import { ErrorCode } from '../../src/libvirt/error-codes';
import { fleetDomainXmls } from '../../src/workers/libvirt-provider';

/** A libvirt connection that lists `names` and whose lookups fail NO_DOMAIN for `gone` (a domain that left). */
function fakeHost(
  names: Array<{ name: string; uuid: string }>,
  gone: string[] = [],
): () => Promise<LibvirtConnection> {
  const conn = {
    listDomains: () => Promise.resolve(names.map((n) => ({ ...n, state: 5 }))),
    lookupByUuid: (uuid: string): Promise<Domain> => {
      if (gone.includes(uuid))
        return Promise.reject(
          new LibvirtError('virDomainLookupByUUID', {
            code: ErrorCode.NO_DOMAIN,
            domain: 10,
            message: 'Domain not found',
            level: 2,
            str1: null,
            str2: null,
            str3: null,
            int1: 0,
            int2: 0,
          }),
        );
      return Promise.resolve({
        isActive: () => Promise.resolve(false),
        xml: () => Promise.resolve(`<domain><name>${uuid}</name></domain>`),
        free: () => undefined,
      } as unknown as Domain);
    },
  };
  return () => Promise.resolve(conn as unknown as LibvirtConnection);
}

const U1 = '11111111-1111-4111-8111-111111111111';
const U2 = '22222222-2222-4222-8222-222222222222';

describe('LIVEMERGE_HOST_URIS', () => {
  it('splits each entry at its first =, keeps this host at its own URI, and lists the hosts', () => {
    const uri = 'qemu+unix:///system?socket=/tmp/h2/sock/libvirt-sock';
    expect(parseHostUris(`a=qemu:///system, b=${uri}`)).toEqual({ a: 'qemu:///system', b: uri });
    expect(parseHostUris(formatHostUris({ a: 'qemu:///system', b: uri }))).toEqual({
      a: 'qemu:///system',
      b: uri,
    });
    expect(() => parseHostUris('a')).toThrow(/not id=uri/);
    expect(() => formatHostUris({ 'a,b': 'x' })).toThrow(/may contain/);
    const c = loadConfig({ LIVEMERGE_HOST_ID: 'a', LIVEMERGE_HOST_URIS: `a=qemu:///other,b=${uri}` });
    expect(c.hostUris).toEqual({ a: 'qemu:///system', b: uri });
    expect(c.hosts).toEqual(['a', 'b']);
    expect(loadConfig({ LIVEMERGE_HOST_ID: 'a' }).hosts).toEqual(['a']);
  });
});

describe('fleetDomainXmls', () => {
  it("tags every domain with its host and reads this host through the agent's own connection", async () => {
    const fleet = fleetDomainXmls({ hostId: 'a', libvirt: fakeHost([{ name: 'vm1', uuid: U1 }]) }, {});
    expect((await fleet()).map((d) => [d.name, d.uuid, d.host])).toEqual([['vm1', U1, 'a']]);
    await fleet.close();
  });

  it('refuses while a configured host has no URI', async () => {
    const fleet = fleetDomainXmls({ hostId: 'a', libvirt: fakeHost([]) }, {}, ['a', 'b']);
    await expect(fleet()).rejects.toThrow(/host\(s\) b are configured .* without a libvirt URI/);
    await fleet.close();
  });

  it('refuses, naming it, while a host does not answer (its libvirtd socket is gone)', async () => {
    const fleet = fleetDomainXmls(
      { hostId: 'a', libvirt: fakeHost([{ name: 'vm1', uuid: U1 }]) },
      { b: 'qemu+unix:///system?socket=/nonexistent/libvirt-sock' },
    );
    await expect(fleet()).rejects.toThrow(/host b \(qemu\+unix:.*\) did not answer/);
    await fleet.close();
  });

  it('refuses when a domain left a host during the read and no host listed it (a migration)', async () => {
    const lost = fleetDomainXmls({ hostId: 'a', libvirt: fakeHost([{ name: 'vm2', uuid: U2 }], [U2]) }, {});
    await expect(lost()).rejects.toThrow(new RegExp(`${U2} \\(left host a\\) vanished`));
    await lost.close();
  });
});
