"""The gRPC servicers of the router's own API that hold no state of their own.

RegistryService is `registry_service.RegistryServicer`, StatusService
`status_service.StatusServicer`; EventBusService is the event bus itself
(`router.bus.event_bus.EventBus`) and PipelineRunService the pipeline
(`router.pipeline.engine.Pipeline`). The deprecated RouterService
(`router_service.RouterServiceDelegate`) hands each of its RPCs to the one of these that owns it.
"""
