"""The ChirpStack v4 API services of ``simulators.chirpstack_api.ChirpStackAPI``: one servicer
per ``chirpstack_api.api`` service, over the stand-in's in-memory tables. The rules they follow
and where in ChirpStack's source each comes from: that module's docstring.
"""

import copy
import functools
import uuid

import grpc
from chirpstack_api import api, common
from google.protobuf import empty_pb2


class Status(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code, self.message = code, message


def _uuid(text):
    try:
        return str(uuid.UUID(text))
    except ValueError as e:
        raise Status(grpc.StatusCode.INVALID_ARGUMENT, "invalid character: %s" % e if text else
                      "invalid length: expected length 32 for simple format, found 0")


def _hex(text, n_bytes):
    """lrwn's EUI64/AES128Key ``from_str``: exactly ``2 * n_bytes`` hex digits, lowercased."""
    try:
        raw = bytes.fromhex(text) if len(text) == 2 * n_bytes and text.strip() == text else None
    except ValueError:
        raw = None
    if raw is None:
        raise Status(grpc.StatusCode.INTERNAL, "Invalid string length" if len(text) != 2 * n_bytes
                      else "Invalid character")
    return raw.hex()


def _rpc(mutating=False):
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, request, context):
            return self.api._dispatch(fn, self, request, context, mutating)
        return wrapper
    return deco


def _page(items, req):
    items = sorted(items, key=lambda m: (m.name, getattr(m, "id", "") or getattr(m, "dev_eui", "")
                                         or getattr(m, "gateway_id", "")))
    if req.search:
        items = [m for m in items if req.search.lower() in m.name.lower()]
    return len(items), items[req.offset:req.offset + req.limit]


class _Service:
    def __init__(self, stand_in):
        self.api = stand_in


class ApplicationService(_Service, api.ApplicationServiceServicer):
    @_rpc(mutating=True)
    def Create(self, req, who):
        if not req.HasField("application"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "application is missing")
        tenant = _uuid(req.application.tenant_id)
        self.api._tenant_access(who, tenant)
        self.api._validate_name(req.application.name)
        app = copy.deepcopy(req.application)
        app.id, app.tenant_id = str(uuid.uuid4()), tenant
        self.api.applications[app.id] = app
        return api.CreateApplicationResponse(id=app.id)

    @_rpc()
    def Get(self, req, who):
        app = self.api._object(who, self.api.applications, _uuid(req.id))
        return api.GetApplicationResponse(application=app)

    @_rpc(mutating=True)
    def Update(self, req, who):
        if not req.HasField("application"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "application is missing")
        old = self.api._object(who, self.api.applications, _uuid(req.application.id))
        self.api._validate_name(req.application.name)
        old.name, old.description = req.application.name, req.application.description
        old.tags.clear()
        old.tags.update(req.application.tags)
        return empty()

    @_rpc(mutating=True)
    def Delete(self, req, who):
        app_id = _uuid(req.id)
        self.api._object(who, self.api.applications, app_id)
        del self.api.applications[app_id]
        for eui in [e for e, d in self.api.devices.items() if d.application_id == app_id]:
            self.api.devices.pop(eui)
            self.api.device_keys.pop(eui, None)
        return empty()

    @_rpc()
    def List(self, req, who):
        tenant = _uuid(req.tenant_id)
        self.api._tenant_access(who, tenant)
        total, items = _page([a for a in self.api.applications.values() if a.tenant_id == tenant], req)
        return api.ListApplicationsResponse(total_count=total, result=[
            api.ApplicationListItem(id=a.id, name=a.name, description=a.description) for a in items])


class DeviceProfileService(_Service, api.DeviceProfileServiceServicer):
    @_rpc(mutating=True)
    def Create(self, req, who):
        if not req.HasField("device_profile"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "device_profile is missing")
        tenant = _uuid(req.device_profile.tenant_id)
        self.api._tenant_access(who, tenant)
        self.api._validate_name(req.device_profile.name)
        dp = copy.deepcopy(req.device_profile)
        dp.id, dp.tenant_id = str(uuid.uuid4()), tenant
        self.api.device_profiles[dp.id] = dp
        return api.CreateDeviceProfileResponse(id=dp.id)

    @_rpc()
    def Get(self, req, who):
        return api.GetDeviceProfileResponse(device_profile=self.api._object(who, self.api.device_profiles,
                                                                             _uuid(req.id)))

    @_rpc(mutating=True)
    def Update(self, req, who):
        if not req.HasField("device_profile"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "device_profile is missing")
        old = self.api._object(who, self.api.device_profiles, _uuid(req.device_profile.id))
        self.api._validate_name(req.device_profile.name)
        new = copy.deepcopy(req.device_profile)
        new.tenant_id = old.tenant_id  # the tenant of a device profile never changes
        self.api.device_profiles[old.id] = new
        return empty()

    @_rpc(mutating=True)
    def Delete(self, req, who):
        dp_id = _uuid(req.id)
        self.api._object(who, self.api.device_profiles, dp_id)
        del self.api.device_profiles[dp_id]
        return empty()

    @_rpc()
    def List(self, req, who):
        tenant = _uuid(req.tenant_id) if req.tenant_id else None
        if tenant is None and not (who and who["admin"]):
            raise Status(grpc.StatusCode.UNAUTHENTICATED, "")
        if tenant:
            self.api._tenant_access(who, tenant)
        total, items = _page([d for d in self.api.device_profiles.values()
                              if tenant is None or d.tenant_id == tenant], req)
        return api.ListDeviceProfilesResponse(total_count=total, result=[
            api.DeviceProfileListItem(id=d.id, name=d.name, region=d.region, mac_version=d.mac_version,
                                      reg_params_revision=d.reg_params_revision, supports_otaa=d.supports_otaa)
            for d in items])


class DeviceService(_Service, api.DeviceServiceServicer):
    def _checked(self, d):
        dev_eui = _hex(d.dev_eui, 8)
        app_id, dp_id = _uuid(d.application_id), _uuid(d.device_profile_id)
        join_eui = _hex(d.join_eui, 8) if d.join_eui else "0000000000000000"
        return dev_eui, app_id, dp_id, join_eui

    def _store(self, d, dev_eui, app_id, dp_id, join_eui, creating):
        stored = copy.deepcopy(d)
        stored.dev_eui, stored.application_id, stored.device_profile_id, stored.join_eui = (
            dev_eui, app_id, dp_id, join_eui)
        if app_id not in self.api.applications:  # storage/device.rs: the tenant query finds no row
            raise Status(grpc.StatusCode.INTERNAL, "Record not found")
        if creating and dev_eui in self.api.devices:
            raise self.api._duplicate("device")
        if dp_id not in self.api.device_profiles:
            raise Status(grpc.StatusCode.INTERNAL, 'insert or update on table "device" violates foreign key '
                                                    'constraint "fk_device_device_profile"')
        self.api.devices[dev_eui] = stored

    @_rpc(mutating=True)
    def Create(self, req, who):
        if not req.HasField("device"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "device is missing")
        dev_eui, app_id, dp_id, join_eui = self._checked(req.device)
        self.api._object_access(who, self.api.applications.get(app_id))
        self._store(req.device, dev_eui, app_id, dp_id, join_eui, True)
        return empty()

    @_rpc()
    def Get(self, req, who):
        return api.GetDeviceResponse(device=self._device(who, req.dev_eui),
                                     class_enabled=common.DeviceClass.CLASS_A)

    def _device(self, who, dev_eui):
        return self.api._object(who, self.api.devices, _hex(dev_eui, 8), self.api._device_tenant)

    @_rpc(mutating=True)
    def Update(self, req, who):
        if not req.HasField("device"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "device is missing")
        dev_eui, app_id, dp_id, join_eui = self._checked(req.device)
        self._device(who, dev_eui)
        self.api._object_access(who, self.api.applications.get(app_id))
        self.api._object_access(who, self.api.device_profiles.get(dp_id))
        self._store(req.device, dev_eui, app_id, dp_id, join_eui, False)
        return empty()

    @_rpc(mutating=True)
    def Delete(self, req, who):
        dev_eui = self._device(who, req.dev_eui).dev_eui
        del self.api.devices[dev_eui]
        self.api.device_keys.pop(dev_eui, None)
        return empty()

    @_rpc()
    def List(self, req, who):
        app_id = _uuid(req.application_id)
        self.api._object_access(who, self.api.applications.get(app_id))
        found = [d for d in self.api.devices.values() if d.application_id == app_id
                 and (not req.device_profile_id or d.device_profile_id == req.device_profile_id)
                 and all(d.tags.get(k) == v for k, v in req.tags.items())]
        total, items = _page(found, req)
        names = {k: v.name for k, v in self.api.device_profiles.items()}
        return api.ListDevicesResponse(total_count=total, result=[
            api.DeviceListItem(dev_eui=d.dev_eui, name=d.name, description=d.description,
                               device_profile_id=d.device_profile_id,
                               device_profile_name=names.get(d.device_profile_id, ""), tags=d.tags)
            for d in items])

    def _keys_request(self, req, who, creating):
        if not req.HasField("device_keys"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "device_keys is missing")
        k = req.device_keys
        dev_eui = _hex(k.dev_eui, 8)
        self._device(who, dev_eui)
        keys = api.DeviceKeys(dev_eui=dev_eui, nwk_key=_hex(k.nwk_key, 16), app_key=_hex(k.app_key, 16),
                              gen_app_key=_hex(k.gen_app_key, 16))
        if creating and dev_eui in self.api.device_keys:
            raise self.api._duplicate("device_keys")
        if not creating and dev_eui not in self.api.device_keys:
            raise Status(grpc.StatusCode.NOT_FOUND, "Object does not exist (id: %s)" % dev_eui)
        self.api.device_keys[dev_eui] = keys
        return empty()

    @_rpc(mutating=True)
    def CreateKeys(self, req, who):
        return self._keys_request(req, who, True)

    @_rpc(mutating=True)
    def UpdateKeys(self, req, who):
        return self._keys_request(req, who, False)

    @_rpc()
    def GetKeys(self, req, who):
        dev_eui = self._device(who, req.dev_eui).dev_eui
        if dev_eui not in self.api.device_keys:
            raise Status(grpc.StatusCode.NOT_FOUND, "Object does not exist (id: %s)" % dev_eui)
        return api.GetDeviceKeysResponse(device_keys=self.api.device_keys[dev_eui])

    @_rpc(mutating=True)
    def DeleteKeys(self, req, who):
        dev_eui = self._device(who, req.dev_eui).dev_eui
        if self.api.device_keys.pop(dev_eui, None) is None:
            raise Status(grpc.StatusCode.NOT_FOUND, "Object does not exist (id: %s)" % dev_eui)
        return empty()


class GatewayService(_Service, api.GatewayServiceServicer):
    def _fill(self, stored, g):
        stored.name, stored.description, stored.stats_interval = g.name, g.description, g.stats_interval
        stored.location.CopyFrom(common.Location(latitude=g.location.latitude, longitude=g.location.longitude,
                                                 altitude=g.location.altitude))
        stored.tags.clear()
        stored.tags.update(g.tags)

    @_rpc(mutating=True)
    def Create(self, req, who):
        if not req.HasField("gateway"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "gateway is missing")
        tenant = _uuid(req.gateway.tenant_id)
        self.api._tenant_access(who, tenant)
        gw_id = _hex(req.gateway.gateway_id, 8)
        self.api._validate_name(req.gateway.name)
        if gw_id in self.api.gateways:
            raise self.api._duplicate("gateway")
        gw = api.Gateway(gateway_id=gw_id, tenant_id=tenant, downlink_priority=req.gateway.downlink_priority or 10)
        self._fill(gw, req.gateway)
        self.api.gateways[gw_id] = gw
        return empty()

    @_rpc()
    def Get(self, req, who):
        return api.GetGatewayResponse(gateway=self.api._object(who, self.api.gateways, _hex(req.gateway_id, 8)))

    @_rpc(mutating=True)
    def Update(self, req, who):
        if not req.HasField("gateway"):
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "gateway is missing")
        gw = self.api._object(who, self.api.gateways, _hex(req.gateway.gateway_id, 8))
        self.api._validate_name(req.gateway.name)
        if req.gateway.downlink_priority <= 0:
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, "Validation error: downlink_priority must be > 0")
        self._fill(gw, req.gateway)
        gw.downlink_priority = req.gateway.downlink_priority
        return empty()

    @_rpc(mutating=True)
    def Delete(self, req, who):
        gw = self.api._object(who, self.api.gateways, _hex(req.gateway_id, 8))
        del self.api.gateways[gw.gateway_id]
        return empty()

    @_rpc()
    def List(self, req, who):
        tenant = _uuid(req.tenant_id) if req.tenant_id else None
        if tenant:
            self.api._tenant_access(who, tenant)
        elif not (who and who["admin"]):
            raise Status(grpc.StatusCode.UNAUTHENTICATED, "" if who else "no authorization provided")
        total, items = _page([g for g in self.api.gateways.values() if tenant is None or g.tenant_id == tenant],
                             req)
        return api.ListGatewaysResponse(total_count=total, result=[
            api.GatewayListItem(tenant_id=g.tenant_id, gateway_id=g.gateway_id, name=g.name,
                                description=g.description, location=g.location) for g in items])


def empty():
    return empty_pb2.Empty()
