"""The seed page and the behaviour reference's errors, driven by the Docker SDK for Python.

Run by tests/docker_sdk.rs against a test's own agent: AGENT_SOCKET, PREFIX (every
container name starts with it: it names a namespace on the host), OCTET (the test's
10.OCTET.0.0/16), API_CURRENT and API_MINIMUM (what the agent must advertise). Kernel
effects are read back with ip(8) and glibc's getent inside the containers' namespaces.
Prints "ok" at the end; any failed check raises.
"""

import os
import subprocess

import docker
from docker.errors import APIError, NotFound
from docker.types import IPAMConfig, IPAMPool

SOCKET = "unix://" + os.environ["AGENT_SOCKET"]
P = os.environ["PREFIX"]
O = int(os.environ["OCTET"])
CURRENT = os.environ["API_CURRENT"]
MINIMUM = os.environ["API_MINIMUM"]

client = docker.DockerClient(base_url=SOCKET)  # negotiates: asks /version first
api = client.api


def ns_run(name, *cmd):
    return subprocess.run(["ip", "netns", "exec", name, *cmd], capture_output=True, text=True)


def getent(name, host):
    out = ns_run(name, "getent", "ahostsv4", host).stdout
    return sorted({line.split()[0] for line in out.splitlines()})


def link_of(name, ifname):
    r = subprocess.run(["ip", "-n", name, "-o", "link", "show", "dev", ifname],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"no {ifname} in {name}: {r.stderr}"
    return r.stdout


def expect_error(status, words, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except APIError as e:
        assert e.status_code == status, (status, e.status_code, e.explanation)
        assert words in (e.explanation or ""), (words, e.explanation)
        return e
    raise AssertionError(f"{call.__name__}{args} succeeded; expected {status} {words!r}")


def ip_of(container, network):
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def names_of_all():
    return sorted(c.name for c in client.containers.list(all=True))


# --- the version, negotiated as the Engine does -------------------------------------------
assert client.version()["ApiVersion"] == CURRENT, client.version()
assert client.version()["MinAPIVersion"] == MINIMUM
assert api.api_version == CURRENT, api.api_version
too_new = docker.APIClient(base_url=SOCKET, version="1.99")
expect_error(400, f"client version 1.99 is too new. Maximum supported API version is {CURRENT}",
             too_new.networks)
# The SDK itself refuses to speak below 1.24: asked on its HTTP session directly.
too_old = api.get(api.base_url + "/v1.20/networks")
assert too_old.status_code == 400, too_old.status_code
assert too_old.json()["message"].startswith(
    f"client version 1.20 is too old. Minimum supported API version is {MINIMUM}"), too_old.text
assert too_old.headers["Api-Version"] == CURRENT
old = docker.APIClient(base_url=SOCKET, version="1.41")  # what Docker 20.10's client speaks

# --- the seed page ---------------------------------------------------------------------
net = client.networks.create(
    "multi-host-network",
    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=f"10.{O}.0.0/17", iprange=f"10.{O}.112.0/20")]),
)
assert len(net.id) == 64
c1 = client.containers.create("busybox", name=f"{P}-c1", network="multi-host-network")
c1.start()
c2 = client.containers.run("busybox", "sleep 1000", name=f"{P}-c2", detach=True)
net.connect(c2)
assert ip_of(c1, "multi-host-network") == f"10.{O}.112.1"
assert ip_of(c2, "multi-host-network") == f"10.{O}.112.2"
c3 = client.containers.create("busybox", name=f"{P}-c3")
c3.start()
fixed = f"10.{O}.64.2"
net.connect(c3, ipv4_address=fixed, aliases=["db", "mysql"], links=[(c1.name, "one")],
            link_local_ips=["169.254.9.9"])
assert ip_of(c3, "multi-host-network") == fixed
assert getent(c3.name, "one") == [ip_of(c1, "multi-host-network")]
assert getent(c1.name, "mysql") == [fixed]
assert getent(c1.name, "one") == [], "a link is the declaring container's only"
assert "169.254.9.9" in ns_run(c3.name, "ip", "-o", "addr", "show", "dev", "eth0").stdout

dual = client.networks.create(
    "dual", enable_ipv6=True,
    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=f"10.{O}.200.0/24"),
                                  IPAMPool(subnet=f"fd{O:02x}:2::/64")]),
)
ip6 = f"fd{O:02x}:2::33"
dual.connect(c2, ipv6_address=ip6)
c2.reload()
assert c2.attrs["NetworkSettings"]["Networks"]["dual"]["GlobalIPv6Address"] == ip6

net.reload()
assert sorted(c.name for c in net.containers) == sorted([c1.name, c2.name, c3.name])
assert [n.name for n in client.networks.list(names=["dual"])] == ["dual"]
assert sorted(c.name for c in client.containers.list()) == sorted([c1.name, c2.name, c3.name])
c1.reload()
assert c1.status == "running"

# --- what the Engine shows at each version ----------------------------------------------
ep = c3.attrs["NetworkSettings"]["Networks"]["multi-host-network"]
assert ep["Aliases"] == ["db", "mysql"], ep["Aliases"]  # as asked, since 1.45
assert ep["DNSNames"][:3] == [c3.name, "db", "mysql"] and c3.id[:12] in ep["DNSNames"], ep
ep41 = old.inspect_container(c3.id)["NetworkSettings"]["Networks"]["multi-host-network"]
assert ep41["Aliases"] == ["db", "mysql", c3.id[:12]], ep41["Aliases"]
assert "DNSNames" not in ep41
assert c3.attrs["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}
assert c3.attrs["NetworkSettings"]["Ports"] == {}

# --- the behaviour reference's errors, which change nothing -----------------------------
expect_error(404, "network nope not found", api.connect_container_to_network, c1.id, "nope")
expect_error(404, "No such container: nope", net.connect, "nope")
expect_error(403, f"endpoint with name {c1.name} already exists in network multi-host-network",
             net.connect, c1)
expect_error(400, "no configured subnet contains IP address 10.250.0.1",
             dual.connect, c1, ipv4_address="10.250.0.1")
expect_error(400, "invalid IPv4 address: 10.1.2", dual.connect, c1, ipv4_address="10.1.2")
expect_error(400, "invalid link-local IP address: 10.0.0.1",
             dual.connect, c1, link_local_ips=["10.0.0.1"])
expect_error(409, "network with name dual already exists", client.networks.create, "dual")
expect_error(403, "network multi-host-network has active endpoints", net.remove)
expect_error(409, "You cannot remove a running container", c1.remove)
c1.reload()
assert list(c1.attrs["NetworkSettings"]["Networks"]) == ["multi-host-network"], "nothing changed"

# --- per-endpoint MAC and interface name (1.44, Engine 28's driver option) -------------
mac = "02:42:ac:11:00:99"
c4 = client.containers.create(
    "busybox", name=f"{P}-c4", network="dual",
    networking_config={"dual": api.create_endpoint_config(
        mac_address=mac, driver_opt={"com.docker.network.endpoint.ifname": "data0"})},
)
c4.start()
assert mac in link_of(c4.name, "data0")
c4.reload()
assert c4.attrs["NetworkSettings"]["Networks"]["dual"]["MacAddress"] == mac
mac2 = "02:42:ac:11:00:98"
net.connect(c4, mac_address=mac2)
assert mac2 in link_of(c4.name, "eth0")
expect_error(400, "invalid MAC address", dual.connect, c1, mac_address="01:00:5e:00:00:01")
# The container-wide MAC must agree with the main network's endpoint: refused whole.
expect_error(
    400, "the container-wide MAC address must match the endpoint-specific MAC address",
    api.create_container, "busybox", name=f"{P}-c5", mac_address="02:42:ac:11:00:01",
    host_config=api.create_host_config(network_mode="dual"),
    networking_config=api.create_networking_config(
        {"dual": api.create_endpoint_config(mac_address="02:42:ac:11:00:02")}),
)
assert f"{P}-c5" not in names_of_all()

# --- DNS options as the SDK sends them (HostConfig.Dns, DnsSearch, DnsOptions, ExtraHosts) -
h = client.containers.run("busybox", "sleep 1000", name=f"{P}-h", network="dual", detach=True,
                          dns=[f"127.{O}.0.53"], dns_search=["example.test"], dns_opt=["ndots:3"],
                          extra_hosts={"db.local": "10.9.9.9", "gw.local": "host-gateway"})
h.reload()
hc = h.attrs["HostConfig"]
assert hc["Dns"] == [f"127.{O}.0.53"] and hc["DnsSearch"] == ["example.test"], hc
assert hc["DnsOptions"] == ["ndots:3"], hc
assert sorted(hc["ExtraHosts"]) == ["db.local:10.9.9.9", "gw.local:host-gateway"], hc
resolv = open(f"/etc/netns/{h.name}/resolv.conf").read()
assert "search example.test\n" in resolv and "options ndots:3\n" in resolv, resolv
hosts = open(f"/etc/netns/{h.name}/hosts").read()
assert "10.9.9.9\tdb.local\n" in hosts and f"10.{O}.200.1\tgw.local\n" in hosts, hosts
expect_error(400, "invalid DNS server address", client.containers.create, "busybox",
             name=f"{P}-bad", network="dual", dns=["not-an-ip"])
assert f"{P}-bad" not in names_of_all()
h.remove(force=True)

# --- API 1.48 through the raw API (the SDK does not know these fields) ---------------------
def raw(method, path, body=None):
    r = api.request(method, f"{api.base_url}/v{CURRENT}{path}", json=body)
    return r.status_code, (r.json() if r.content else None)

g = client.containers.run("busybox", "sleep 1000", name=f"{P}-g", network="dual", detach=True)
def default4():
    return ns_run(g.name, "ip", "-4", "route", "show", "default").stdout
assert f"via 10.{O}.200.1 " in default4(), default4()
status, _ = raw("POST", f"/networks/{net.id}/connect",
                {"Container": g.id, "EndpointConfig": {"GwPriority": 3}})
assert status == 200, status
assert f"via 10.{O}.0.1 " in default4(), default4()
status, ins = raw("GET", f"/containers/{g.id}/json")
assert ins["NetworkSettings"]["Networks"]["multi-host-network"]["GwPriority"] == 3, ins
net.disconnect(g)
assert f"via 10.{O}.200.1 " in default4(), default4()
status, created = raw("POST", "/networks/create", {
    "Name": "v6o", "EnableIPv4": False, "EnableIPv6": True,
    "IPAM": {"Config": [{"Subnet": f"fd{O:02x}:9::/64"}]}})
assert status == 201, (status, created)
status, v6o = raw("GET", "/networks/v6o")
assert v6o["EnableIPv4"] is False and len(v6o["IPAM"]["Config"]) == 1, v6o
client.networks.get("v6o").connect(g)
g.reload()
ep6 = g.attrs["NetworkSettings"]["Networks"]["v6o"]
assert ep6["IPAddress"] == "" and ep6["GlobalIPv6Address"].startswith(f"fd{O:02x}:9::"), ep6
client.networks.get("v6o").disconnect(g)
client.networks.get("v6o").remove()
g.remove(force=True)

# --- runs: detached works, in the foreground is refused with words and leaves nothing ----
d = client.containers.run("busybox", "sleep 1000", name=f"{P}-d", network="dual", detach=True)
d.reload()
assert d.status == "running"
assert getent(c4.name, d.name) == [ip_of(d, "dual")]
before = names_of_all()
for extra in ({}, {"remove": True}):
    e = expect_error(501, "cannot run in the foreground", client.containers.run, "busybox",
                     "echo hi", name=f"{P}-fg", network="dual", **extra)
    assert "detach=True" in e.explanation
    assert names_of_all() == before, names_of_all()
    assert not os.path.exists(f"/run/netns/{P}-fg")

# A program's own create, start and logs(follow=True) is not a run: 501, container kept.
own = client.containers.create("busybox", "sleep 1000", name=f"{P}-own", network="dual")
own.start()
e = expect_error(501, "has no output", own.logs, stream=True, follow=True)
assert f"{P}-own" in names_of_all()
own.remove(force=True)

# --- teardown through the SDK: disconnect, stop, remove, prune -------------------------
net.disconnect(c3)
assert getent(c1.name, "mysql") == []
for c in (c1, c2, c3, c4, d):
    c.stop()
    c.remove()
try:
    client.containers.get(c1.id)
    raise AssertionError("removed container still there")
except NotFound:
    pass
net.remove()
assert client.networks.prune()["NetworksDeleted"] == ["dual"]
assert client.networks.list() == []
print("ok")
