"""The output image: what the shell drives after every scan.

Six logical outputs, each an integer.  The site config maps them to
gpiozero pins or Modbus coils; the core only decides their values.
"""

OUT_SIREN = 0    # 0/1
OUT_STROBE = 1   # 0/1
OUT_LOCK = 2     # 0/1: 1 opens the battery-output contactor (locked out)
OUT_LED = 3      # a pattern code, see LED_*
OUT_LIGHTS = 4   # 0/1: the port's floodlights (an escalation step)
OUT_CAMERA = 5   # 0/1: 1 sends the camera to its alarm preset, 0 back home (an escalation step)
OUTPUT_NAMES = ("siren", "strobe", "lock", "led", "lights", "camera")
N_OUTPUTS = 6

# Status LED patterns, one per mode (index = modes.* constant).  The LED is
# never plainly off while the gateway runs, so a dark LED means a dead box.
LED_HEARTBEAT = 1   # disarmed
LED_SLOW_BLINK = 2  # exit or entry delay running
LED_STEADY = 3      # armed
LED_DOUBLE = 4      # maintenance
LED_FAST_BLINK = 5  # alarm
LED_FAULT = 6       # fault
LED_FOR_MODE = (
    LED_HEARTBEAT, LED_SLOW_BLINK, LED_STEADY, LED_SLOW_BLINK,
    LED_DOUBLE, LED_FAST_BLINK, LED_FAULT,
)

# The documented safe state on shutdown: no sound, no light, the battery
# lock kept as it was (an incident's lock must survive a restart), the LED
# off so a dark LED reads as "not running", floodlights off, camera home.
def safe_state(lock):
    return [0, 0, lock, 0, 0, 0]
