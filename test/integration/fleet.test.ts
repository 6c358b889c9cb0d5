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
  /** After each listing (a domain undefined meanwhile drops out of the next one). */
  listed: () => void = () => undefined,
): () => Promise<LibvirtConnection> {
  const conn = {
    listDomains: () => {
      const now = names.map((n) => ({ ...n, state: 5 }));
      listed();
      return Promise.resolve(now);
    },
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

  it('refuses when a domain keeps leaving a host during the read and no host lists it (a migration)', async () => {
    let lists = 0;
    const host = fakeHost([{ name: 'vm2', uuid: U2 }], [U2], () => lists++);
    const lost = fleetDomainXmls({ hostId: 'a', libvirt: host }, {});
    await expect(lost()).rejects.toThrow(new RegExp(`${U2} \\(left host a\\) vanished .*3 times`));
    expect(lists).toBe(3);
    await lost.close();
  });

  it('reads again when a domain left during the read, and answers once a read sees it gone', async () => {
    // Another client undefines vm2 between the listing and the lookup: the second read no longer lists it.
    const names = [
      { name: 'vm1', uuid: U1 },
      { name: 'vm2', uuid: U2 },
    ];
    let lists = 0;
    const host = fakeHost(names, [U2], () => {
      lists++;
      names.splice(1, 1);
    });
    const fleet = fleetDomainXmls({ hostId: 'a', libvirt: host }, {});
    expect((await fleet()).map((d) => d.uuid)).toEqual([U1]);
    expect(lists).toBe(2);
    await fleet.close();
  });
});
