//! Everything that talks to the kernel about networking: links, addresses, routes, VXLAN
//! forwarding and neighbour entries over rtnetlink ([`netlink`]), and network namespaces
//! ([`netns`]: made, opened, entered, removed, and their /etc/netns files).

pub mod netlink;
pub mod netns;
