/** A peer offers its addresses reachable from other machines first (users bootstrap to the first one printed). */
import { describe, expect, it } from 'vitest'
import { loopbackLast } from '../../src/node/peer.js'

describe('loopbackLast', () => {
  it('puts loopback addresses after the others and keeps each group in order', () => {
    const id = '/p2p/12D3KooWExample'
    expect(
      loopbackLast([
        `/ip4/127.0.0.1/tcp/4001${id}`,
        `/ip4/192.168.1.10/tcp/4001${id}`,
        `/ip6/::1/tcp/4001${id}`,
        `/ip4/10.0.0.5/tcp/4001${id}`,
        `/ip6/fe80::1/tcp/4001${id}`,
      ]),
    ).toEqual([
      `/ip4/192.168.1.10/tcp/4001${id}`,
      `/ip4/10.0.0.5/tcp/4001${id}`,
      `/ip6/fe80::1/tcp/4001${id}`,
      `/ip4/127.0.0.1/tcp/4001${id}`,
      `/ip6/::1/tcp/4001${id}`,
    ])
  })

  it('leaves a loopback-only list as it is', () => {
    expect(loopbackLast(['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.2/tcp/2'])).toEqual(['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.2/tcp/2'])
  })
})
