//! `sensors`: temperature and humidity readings of IoT devices, some of which overheat.
//!
//! `{"device_id":"d0042","temperature":21.37,"humidity":44.8,"battery":0.93,
//! "ts":"2026-01-05T14:30:00.123Z"}`
//!
//! - 200 devices d0000..d0199, uniform.
//! - Each device has a base temperature U[18, 26) °C and base humidity U[30, 60) %, both drawn
//!   once; a reading adds Normal(0, 0.5) °C and Normal(0, 2) % (humidity kept in [0, 100]).
//! - A fault: each reading of a healthy device starts one with p = 0.001; the next 20 readings
//!   of that device are U[60, 95) °C: the readings past a threshold an alert watches for.
//! - Battery drains from U[0.5, 1.0) by 0.00001 per reading, to no less than 0.

use std::io::Write;

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::time::EventClock;

const DEVICES: usize = 200;
const FAULT_P: f64 = 0.001;
const FAULT_READINGS: u32 = 20;
const FAULT_TEMPERATURES: std::ops::Range<f64> = 60.0..95.0;
const DRAIN_PER_READING: f64 = 0.00001;

struct Device {
    temperature: f64,
    humidity: f64,
    battery: f64,
    /// Readings left in the current fault; 0 when healthy.
    fault_left: u32,
}

pub(crate) struct Sensors {
    devices: Vec<Device>,
    temperature_noise: Normal<f64>,
    humidity_noise: Normal<f64>,
}

impl Sensors {
    pub(crate) fn new<R: Rng>(rng: &mut R) -> Self {
        let devices = (0..DEVICES)
            .map(|_| Device {
                temperature: rng.random_range(18.0..26.0),
                humidity: rng.random_range(30.0..60.0),
                battery: rng.random_range(0.5..1.0),
                fault_left: 0,
            })
            .collect();
        Sensors {
            devices,
            temperature_noise: Normal::new(0.0, 0.5).expect("valid normal parameters"),
            humidity_noise: Normal::new(0.0, 2.0).expect("valid normal parameters"),
        }
    }

    /// Appends the next event, one line.
    pub(crate) fn write_event<R: Rng>(
        &mut self,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        let id = rng.random_range(0..DEVICES);
        let device = &mut self.devices[id];
        if device.fault_left == 0 && rng.random_bool(FAULT_P) {
            device.fault_left = FAULT_READINGS;
        }
        let temperature = if device.fault_left > 0 {
            device.fault_left -= 1;
            rng.random_range(FAULT_TEMPERATURES)
        } else {
            device.temperature + self.temperature_noise.sample(rng)
        };
        let humidity = (device.humidity + self.humidity_noise.sample(rng)).clamp(0.0, 100.0);
        device.battery = (device.battery - DRAIN_PER_READING).max(0.0);
        let ts = clock.next_event_ms(rng);
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"device_id\":\"d{id:04}\",\"temperature\":{temperature:.2},\
             \"humidity\":{humidity:.1},\"battery\":{:.3},\"ts\":\"",
            device.battery
        );
        clock.push_timestamp(out, ts);
        out.extend_from_slice(b"\"}\n");
    }
}
