//! Everything that talks to the kernel about networking: links, addresses, routes, VXLAN
//! forwarding and neighbour entries over rtnetlink ([`netlink`]), and network namespaces
//! ([`netns`]: made, opened, entered, removed, and their /etc/netns files); handles kept
//! between operations ([`handles`]: sockets inside the agent's namespaces, bridge indexes).

pub mod handles;
pub mod netlink;
pub mod netns;
