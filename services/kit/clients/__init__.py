"""Typed calls to the mesh's capabilities through the router, shared by the command line and
the router's own scheduled work: reading a playlist, asking the library whether it holds a
track, requesting a download."""
