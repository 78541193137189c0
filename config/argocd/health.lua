-- Health of a cellsync object for Argo CD, from its kstatus conditions:
-- Stalled=True is Degraded, Reconciling=True is Progressing, Ready=True is Healthy, Ready=False
-- is Degraded (Progressing when the reason says it is still on its way), no Ready yet is
-- Progressing. A Cell that is Stale is Degraded whatever else it says. A Rollout that is Paused
-- (awaiting approval, paused by a RolloutStep, or held after a hub lost its state) is Suspended,
-- and so is any object whose spec.suspend is true.
local hs = {status = "Progressing", message = "Waiting for status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.spec ~= nil and obj.spec.suspend == true then
  return {status = "Suspended", message = "spec.suspend is true"}
end
if obj.kind == "Rollout" and obj.status.phase == "Paused" then
  return {status = "Suspended", message = obj.status.message}
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the controller to observe the latest generation"
  return hs
end
local ready = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then
    return {status = "Degraded", message = c.message}
  end
  if c.type == "Stale" and c.status == "True" then
    return {status = "Degraded", message = c.message}
  end
  if c.type == "Reconciling" and c.status == "True" then
    hs.message = c.message
    return hs
  end
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return hs
end
if ready.status == "True" then
  return {status = "Healthy", message = ready.message}
end
if ready.reason == "Progressing" or ready.reason == "NoReport" then
  hs.message = ready.message
  return hs
end
if ready.reason == "Suspended" then
  return {status = "Suspended", message = ready.message}
end
return {status = "Degraded", message = ready.message}
