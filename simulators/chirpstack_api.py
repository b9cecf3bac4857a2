"""``ChirpStackAPI``: an in-memory stand-in for ChirpStack v4's gRPC API, served by grpcio on a
free loopback port with the ``chirpstack_api.api`` service definitions, so provisioning is
tested over a real gRPC connection.

Services: ApplicationService, DeviceProfileService, DeviceService (Create, Get, Update,
Delete, List, CreateKeys, GetKeys, UpdateKeys, DeleteKeys) and GatewayService (Create, Get,
Update, Delete, List); any other method answers UNIMPLEMENTED (the generated base class).

What it does as ChirpStack does (chirpstack/chirpstack at d77207cd, ``chirpstack/src/api``):

- **Tokens** (``api/auth/mod.rs``, ``api/auth/validator.rs``): ``authorization: Bearer <token>``
  metadata. Without the ``Bearer `` prefix, or with a token it does not know: UNAUTHENTICATED
  before anything else. Without the header at all the request is parsed first, then refused
  with UNAUTHENTICATED "no authorization provided". A tenant API key reaches only its own
  tenant's objects: another tenant's object, or one that does not exist, is UNAUTHENTICATED
  (the validator counts 0 matching rows), not NOT_FOUND; an admin key sees NOT_FOUND.
- **Arguments** (``api/device.rs`` etc.): a missing request object is INVALID_ARGUMENT
  ("device is missing"); a UUID that does not parse is INVALID_ARGUMENT (``uuid::Error``); an
  EUI64 or AES key that is not exactly 16/32 hex digits is INTERNAL (``lrwn::Error`` maps to
  Internal in ``api/error.rs``) — so a LoRaWAN 1.0.x ``CreateKeys`` must still send 32 hex
  digits (zeros) for ``app_key`` and ``gen_app_key``. EUIs come back lowercase; an empty
  ``join_eui`` is stored as 0000000000000000.
- **Storage** (``storage/*.rs``, ``storage/error.rs``): Get/Update/Delete of a missing object
  is NOT_FOUND "Object does not exist (id: …)"; an empty name is INVALID_ARGUMENT
  ("Validation error: name is not set"); a gateway's ``downlink_priority`` 0 becomes 10 on
  Create and is refused on Update. A duplicate (a DevEUI, gateway id or device's keys that
  already exist) is a database unique violation, which ChirpStack v4 returns as INTERNAL
  ('duplicate key value violates unique constraint "device_pkey"'): ``storage::error``
  maps only diesel's NotFound, so its ALREADY_EXISTS code is never produced.
  ``duplicate_code=grpc.StatusCode.ALREADY_EXISTS`` answers as ChirpStack v3 did instead.
  A device naming a missing application or device profile is INTERNAL too.
- **Lists** are ordered by name, filtered by a case-insensitive name substring (``search``),
  paged by ``limit``/``offset`` (limit 0: none), with ``total_count``.

Test hooks: ``mutations`` (successful Create/Update/Delete calls of any kind), ``calls`` and
``calls_by_method``; ``fail_call(n, code=UNAVAILABLE, after=False, count=1)`` makes the
``n``-th call from now (and the ``count - 1`` after it) fail — before it does anything, or
with ``after=True`` once it has done its work (a reply lost on the way back).
"""

import secrets
import threading
import uuid
from concurrent import futures

import grpc
from chirpstack_api import api

from simulators.chirpstack_services import (
    ApplicationService, DeviceProfileService, DeviceService, GatewayService, Status)

_UNIQUE = {"device": "device_pkey", "device_keys": "device_keys_pkey", "gateway": "gateway_pkey"}


class ChirpStackAPI:
    """The stand-in. ``start()`` serves it on 127.0.0.1 (``target`` "127.0.0.1:PORT", ``url``
    "http://127.0.0.1:PORT"); ``stop()`` ends it; also a context manager.

    It starts with one tenant (``tenant_id``), a tenant API key for it (``token``) and an admin
    API key (``admin_token``); ``add_tenant()`` and ``add_api_key(tenant_id=None)`` make more.
    The objects are ``chirpstack_api.api`` messages in ``applications``, ``device_profiles``
    (by id), ``devices``, ``device_keys`` (by lowercase DevEUI) and ``gateways`` (by id).
    """

    def __init__(self, duplicate_code=grpc.StatusCode.INTERNAL, workers=8):
        self.duplicate_code, self.workers = duplicate_code, workers
        self.tenants, self.tokens = {}, {}
        self.applications, self.device_profiles, self.devices, self.device_keys, self.gateways = {}, {}, {}, {}, {}
        self.calls, self.mutations, self.calls_by_method = 0, 0, {}
        self._faults, self._lock, self._server, self.port = {}, threading.RLock(), None, None
        self.tenant_id = self.add_tenant("civicedge")
        self.token = self.add_api_key(self.tenant_id)
        self.admin_token = self.add_api_key(None)

    # -- set-up and test hooks -----------------------------------------------------------------
    def add_tenant(self, name):
        tenant_id = str(uuid.uuid4())
        self.tenants[tenant_id] = name
        return tenant_id

    def add_api_key(self, tenant_id=None):
        """A new API token: for ``tenant_id``, or an admin key (None)."""
        token = "csk." + secrets.token_urlsafe(24)
        self.tokens[token] = {"admin": tenant_id is None, "tenant_id": tenant_id}
        return token

    def fail_call(self, n, code=grpc.StatusCode.UNAVAILABLE, after=False, count=1):
        """Make the ``n``-th call from now (1 = the next) and the ``count - 1`` after it fail
        with ``code``: before doing anything, or (``after``) once its work is done."""
        with self._lock:
            for i in range(count):
                self._faults[self.calls + n + i] = (code, after)

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://" + self.target

    def start(self):
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers))
        for add, service in ((api.add_ApplicationServiceServicer_to_server, ApplicationService),
                             (api.add_DeviceProfileServiceServicer_to_server, DeviceProfileService),
                             (api.add_DeviceServiceServicer_to_server, DeviceService),
                             (api.add_GatewayServiceServicer_to_server, GatewayService)):
            add(service(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- one call ---------------------------------------------------------------------------------
    def _dispatch(self, fn, service, request, context, mutating):
        name = "%s.%s" % (type(service).__name__, fn.__name__)
        with self._lock:
            self.calls += 1
            self.calls_by_method[name] = self.calls_by_method.get(name, 0) + 1
            fault = self._faults.pop(self.calls, None)
        if fault and not fault[1]:
            context.abort(fault[0], "injected fault: %s" % fault[0].name)
        error = None
        try:
            who = self._authenticate(context)
            with self._lock:
                reply = fn(service, request, who)
                if mutating:
                    self.mutations += 1
        except Status as e:
            error = e
        if fault:
            context.abort(fault[0], "injected fault after the call's work: %s" % fault[0].name)
        if error is not None:
            context.abort(error.code, error.message)
        return reply

    def _authenticate(self, context):
        """None (no header: each method then refuses), or the token's {"admin", "tenant_id"}."""
        header = [v for k, v in context.invocation_metadata() if k == "authorization"]
        if not header:
            return None
        if not header[0].startswith("Bearer "):
            raise Status(grpc.StatusCode.UNAUTHENTICATED,
                          "authorization metadata must be in format 'Bearer <TOKEN>")
        who = self.tokens.get(header[0][len("Bearer "):])
        if who is None:
            raise Status(grpc.StatusCode.UNAUTHENTICATED, "InvalidSignature")
        return who

    # -- ChirpStack's rules -------------------------------------------------------------------
    @staticmethod
    def _need(who):
        if who is None:
            raise Status(grpc.StatusCode.UNAUTHENTICATED, "no authorization provided")

    def _tenant_access(self, who, tenant_id):
        self._need(who)
        if not who["admin"] and who["tenant_id"] != tenant_id:
            raise Status(grpc.StatusCode.UNAUTHENTICATED, "")
        if tenant_id not in self.tenants:
            raise Status(grpc.StatusCode.INTERNAL, "Record not found")

    def _device_tenant(self, device):
        app = self.applications.get(device.application_id)
        return app.tenant_id if app else None

    def _object_access(self, who, obj, tenant_of=None):
        """A tenant key reaches only an existing object of its tenant (else UNAUTHENTICATED)."""
        self._need(who)
        if who["admin"]:
            return
        tenant = None if obj is None else (tenant_of(obj) if tenant_of else obj.tenant_id)
        if tenant is None or tenant != who["tenant_id"]:
            raise Status(grpc.StatusCode.UNAUTHENTICATED, "")

    def _object(self, who, table, key, tenant_of=None):
        obj = table.get(key)
        self._object_access(who, obj, tenant_of)
        if obj is None:
            raise Status(grpc.StatusCode.NOT_FOUND, "Object does not exist (id: %s)" % key)
        return obj

    @staticmethod
    def _validate_name(name):
        if not name:
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "Validation error: name is not set")

    def _duplicate(self, table):
        if self.duplicate_code == grpc.StatusCode.ALREADY_EXISTS:
            return Status(self.duplicate_code, "Object already exists")
        return Status(self.duplicate_code, 'duplicate key value violates unique constraint "%s"' % _UNIQUE[table])
