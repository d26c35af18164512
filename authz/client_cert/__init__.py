"""Where the client certificate comes from: Envoy's peer-certificate field today; each source
says which text identifies the leaf and how to parse it. Pure, like the core."""
