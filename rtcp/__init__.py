"""rtcp: a complete TCP-style protocol in user space over UDP, and a verified file copy on top."""

__version__ = "0.1.0"
