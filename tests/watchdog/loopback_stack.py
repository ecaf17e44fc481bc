"""The stack the watchdog tests and benchmarks serve and probe for real, all on loopback."""

# A cluster whose every address is on loopback, so tests can serve and probe it for real.
TEST_STACK = """\
# test stack: everything on 127.0.0.0/8
config:
  mac:network: {bridge: br0, cidr: 127.0.0.0/8, gateway: 127.0.0.1}
  mac:image: {source: /srv/images/debian-12.qcow2}
  mac:hosts:
    kvm1: {uri: "qemu+ssh://root@127.0.1.1/system", address: 127.0.1.1, fence: "true"}
    kvm2: {uri: "qemu+ssh://root@127.0.1.2/system", address: 127.0.1.2, fence: "true"}
    kvm3: {uri: "qemu+ssh://root@127.0.1.3/system", address: 127.0.1.3, fence: none}
    spare1: {uri: "qemu+ssh://root@127.0.1.21/system", address: 127.0.1.21, fence: "true"}
  mac:spares: [spare1]
  mac:failedHosts: []
  mac:nodes:
    db1: {role: mysql, host: kvm1, ip: 127.0.2.11}
    db2: {role: mysql, host: kvm2, ip: 127.0.2.12}
    web1: {role: web, host: kvm1, ip: 127.0.2.21}
    web2: {role: web, host: kvm2, ip: 127.0.2.22}
    lb1: {role: lb, host: kvm3, ip: 127.0.2.10}
  mac:dbRootPassword:
    secure: v1:c2VjcmV0LW5vdC1yZWFsbHk=
  mac:watchdog:
    interval: 0.05
    probeTimeout: 0.3
    failThreshold: 3
    failAfter: 0.1
    recoverThreshold: 2
    verifyTimeout: 3
"""
