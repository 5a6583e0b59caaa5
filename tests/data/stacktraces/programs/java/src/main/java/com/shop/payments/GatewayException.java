package com.shop.payments;

/** The gateway's reply could not be used. */
public final class GatewayException extends Exception {
    public GatewayException(String message, Throwable cause) {
        super(message, cause);
    }
}
