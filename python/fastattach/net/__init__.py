"""Every socket and the DAP wire: the listener, the relay, the TLS forwarder, the test client.

Runs on fastattach's own threads; never imports engine/ or the public API. The listener
reaches pydevd only through the ``open_backend`` callable it is given. Importing this
package imports nothing.
"""
