"""Router features beside the routes: nftables (NAT, sticky connections), pins,
connection flushes, and the sysctls forwarding needs."""
