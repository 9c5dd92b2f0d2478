"""Getting ESC/POS bytes to a printer: addresses, transports, and failures explained in words."""

import socket
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .models import Printer


class PrintError(Exception):
    """A receipt did not reach the printer; the message tells the cashier what to check."""


@dataclass(frozen=True)
class PrinterTarget:
    name: str
    kind: str
    host: str = ""
    port: int = 9100
    vendor_id: str = ""
    product_id: str = ""
    device: str = ""
    paper_width: int = 80
    profile: str = "default"
    cash_drawer: bool = False

    @property
    def label(self) -> str:
        """How messages name it: "Printer Till 1", or "The printer" for a bare address."""
        if not self.name:
            return "The printer"
        return self.name if "printer" in self.name.lower() else f"Printer {self.name}"

    @property
    def address(self) -> str:
        return Printer(kind=self.kind, host=self.host, port=self.port, usb_vendor_id=self.vendor_id,
                       usb_product_id=self.product_id, device=self.device).address


def target_for(printer: Printer | None) -> PrinterTarget:
    """Where a till's receipts go: its printer, or the default printer when it has none."""
    if printer is None:
        return parse_printer_address(
            settings.RECEIPTS_DEFAULT_PRINTER, name="Default printer",
            paper_width=settings.RECEIPTS_DEFAULT_PAPER_WIDTH, profile=settings.RECEIPTS_DEFAULT_PROFILE,
        )
    return PrinterTarget(
        name=printer.name, kind=printer.kind, host=printer.host, port=printer.port,
        vendor_id=printer.usb_vendor_id, product_id=printer.usb_product_id, device=printer.device,
        paper_width=printer.paper_width, profile=printer.profile, cash_drawer=printer.cash_drawer,
    )


def parse_printer_address(address: str, *, name: str = "", paper_width: int = 80, profile: str = "default",
                          cash_drawer: bool = False) -> PrinterTarget:
    """tcp://host[:port], usb://vvvv:pppp, serial:///dev/ttyUSB0, file:///path (or file://relative),
    lp://queue (cups://queue), browser."""
    scheme, _, rest = address.strip().partition("://")
    scheme = scheme.lower()
    common = {"name": name, "paper_width": paper_width, "profile": profile, "cash_drawer": cash_drawer}
    if scheme == "browser" and not rest:
        return PrinterTarget(kind=Printer.Kind.BROWSER, **common)
    if not rest:
        raise PrintError(f"{address!r} is not a printer address. Use tcp://192.168.1.50:9100, usb://04b8:0e15, "
                         "serial:///dev/ttyUSB0, file:///path or lp://queue.")
    if scheme == "tcp":
        host, _, port = rest.rstrip("/").rpartition(":") if ":" in rest else (rest.rstrip("/"), "", "9100")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise PrintError(f"{address!r}: write a network printer as tcp://HOST:PORT, e.g. tcp://192.168.1.50:9100.")
        return PrinterTarget(kind=Printer.Kind.NETWORK, host=host, port=int(port), **common)
    if scheme == "usb":
        vendor, _, product = rest.partition(":")
        hexdigits = set("0123456789abcdefABCDEF")
        if not (vendor and product and set(vendor + product) <= hexdigits and len(vendor) <= 4 and len(product) <= 4):
            raise PrintError(f"{address!r}: write a USB printer as usb://VENDOR:PRODUCT in hex, as lsusb shows it "
                             "(e.g. usb://04b8:0e15).")
        return PrinterTarget(kind=Printer.Kind.USB, vendor_id=vendor.lower(), product_id=product.lower(), **common)
    if scheme in ("serial", "file", "lp", "cups"):
        kind = {"serial": Printer.Kind.SERIAL, "file": Printer.Kind.FILE}.get(scheme, Printer.Kind.LP)
        return PrinterTarget(kind=kind, device=rest, **common)
    raise PrintError(f"{address!r}: unknown kind of printer {scheme!r}. Use tcp, usb, serial, file or lp.")


def send_to_printer(target: PrinterTarget, data: bytes, *, job_name: str) -> str:
    """Hand the bytes over, within the connect and write timeouts. Returns where they went."""
    senders = {
        Printer.Kind.NETWORK: _send_network,
        Printer.Kind.FILE: _send_file,
        Printer.Kind.USB: _send_usb,
        Printer.Kind.SERIAL: _send_serial,
        Printer.Kind.LP: _send_lp,
    }
    if target.kind not in senders:
        raise PrintError(f"{target.label} prints from the browser only: press Print in browser.")
    return senders[target.kind](target, data, job_name)


def _send_network(target: PrinterTarget, data: bytes, job_name: str) -> str:
    where = f"{target.host}:{target.port}"
    not_answering = f"{target.label} is not answering at {where}: check it is on and connected"
    try:
        connection = socket.create_connection((target.host, target.port), timeout=settings.RECEIPTS_CONNECT_TIMEOUT)
    except TimeoutError:
        raise PrintError(f"{not_answering} to the network.") from None
    except ConnectionRefusedError:
        raise PrintError(f"{not_answering} (it refused the connection: is it still starting, "
                         f"or is the port not {target.port}?).") from None
    except socket.gaierror:
        raise PrintError(f"{target.label}: no computer is called {target.host!r} on this network. "
                         "Check the printer's address.") from None
    except OSError as error:
        raise PrintError(f"{not_answering} ({error.strerror or error}).") from None
    write_timeout = settings.RECEIPTS_WRITE_TIMEOUT
    deadline = time.monotonic() + write_timeout
    with connection:
        try:
            connection.settimeout(write_timeout)
            connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)
            # A raw-port printer closes its side once it has taken the whole job in (as CUPS's socket
            # backend expects); one that accepts but never reads - paper out, cover open - never does,
            # and its kernel buffer would otherwise swallow a small receipt without a word.
            while settings.RECEIPTS_NETWORK_WAIT_FOR_CLOSE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                connection.settimeout(remaining)
                if not connection.recv(1024):
                    break
        except TimeoutError:
            raise PrintError(
                f"{target.label} at {where} took the connection but not the receipt within "
                f"{write_timeout:g} s: check it has paper, its cover is shut and no light is blinking."
            ) from None
        except OSError as error:
            raise PrintError(f"{target.label} at {where} dropped the connection while printing "
                             f"({error.strerror or error}): check it is on, then retry.") from None
    return f"tcp://{where}"


def _send_file(target: PrinterTarget, data: bytes, job_name: str) -> str:
    path = Path(target.device)
    if not path.is_absolute():
        path = settings.BASE_DIR / path
    try:
        # A folder (or a new path without a suffix) collects one file per job; anything else,
        # such as /dev/usb/lp0, is written to directly.
        if path.is_dir() or (not path.exists() and not path.suffix):
            path.mkdir(parents=True, exist_ok=True)
            path = path / f"{job_name}.bin"
            path.write_bytes(data)
        else:
            with path.open("ab") as device:
                device.write(data)
    except PermissionError:
        raise PrintError(f"{target.label}: not allowed to write to {path}. For a USB printer at "
                         "/dev/usb/lp*, add the server's user to the lp group.") from None
    except OSError as error:
        raise PrintError(f"{target.label}: cannot write to {path} ({error.strerror or error}): "
                         "check the printer is plugged in and the path is right.") from None
    return f"file://{path}"


def _send_usb(target: PrinterTarget, data: bytes, job_name: str) -> str:
    from escpos.exceptions import DeviceNotFoundError
    from escpos.printer import Usb

    ids = f"{target.vendor_id}:{target.product_id}"
    if not Usb.is_usable():
        raise PrintError("USB printing needs pyusb on the server: pip install 'python-escpos[usb]'.")
    printer = Usb(int(target.vendor_id, 16), int(target.product_id, 16),
                  timeout=int(settings.RECEIPTS_WRITE_TIMEOUT * 1000), profile=target.profile)
    try:
        printer.open()
        printer._raw(data)  # the documented way to send bytes pre-rendered on a Dummy
    except DeviceNotFoundError as error:
        if "Errno 13" in str(error) or "Access denied" in str(error):
            raise PrintError(f"{target.label} (USB {ids}) is there but this server may not use it: "
                             "add a udev rule giving the lp or dialout group access.") from None
        if "Errno 16" in str(error) or "busy" in str(error).lower():
            raise PrintError(f"{target.label} (USB {ids}) is busy: another program (often CUPS) "
                             "has it. Remove it from CUPS or print through file:///dev/usb/lp0.") from None
        raise PrintError(f"No USB printer {ids} found: check the cable and that it is switched on.") from None
    except Exception as error:
        raise PrintError(f"{target.label} (USB {ids}) failed while printing ({error}): "
                         "check it has paper, then retry.") from None
    finally:
        printer.close()
    return f"usb://{ids}"


def _send_serial(target: PrinterTarget, data: bytes, job_name: str) -> str:
    from escpos.exceptions import DeviceNotFoundError
    from escpos.printer import Serial

    if not Serial.is_usable():
        raise PrintError("Serial printing needs pyserial on the server: pip install 'python-escpos[serial]'.")
    printer = Serial(devfile=target.device, timeout=settings.RECEIPTS_WRITE_TIMEOUT, profile=target.profile)
    try:
        printer.open()
        printer._raw(data)
    except DeviceNotFoundError:
        raise PrintError(f"{target.label}: no serial device at {target.device}. Check the cable "
                         "and the device name (ls /dev/ttyUSB* /dev/ttyS*).") from None
    except Exception as error:
        raise PrintError(f"{target.label} on {target.device} failed while printing ({error}).") from None
    finally:
        printer.close()
    return f"serial://{target.device}"


def _send_lp(target: PrinterTarget, data: bytes, job_name: str) -> str:
    from escpos.printer import LP

    if not LP.is_usable():
        raise PrintError("This server has no lp command (CUPS): install cups-client, or use another printer kind.")
    printer = LP(target.device, profile=target.profile)
    try:
        printer.open(job_name=job_name)
        printer._raw(data)
    except Exception as error:
        raise PrintError(f"Print queue {target.device!r} refused the receipt ({error}): check the queue "
                         "with lpstat -p.") from None
    finally:
        printer.close()
    return f"lp://{target.device}"
