// A stand-in for Apple's Metal module with the API MobileMoEKit uses, spelled as it is imported
// into Swift, so swift/check-metal.sh can type-check the Metal backend on Linux. Nothing here
// runs; declarations only.
@_exported import Foundation

public struct MTLSize {
    public var width, height, depth: Int
    public init(width: Int, height: Int, depth: Int) { self.width = width; self.height = height; self.depth = depth }
}

public struct MTLResourceOptions: OptionSet {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static var storageModeShared: MTLResourceOptions { MTLResourceOptions(rawValue: 0) }
}

public enum MTLGPUFamily: Int { case apple7 = 1007, apple8 = 1008, mac2 = 2002 }

public enum MTLCommandBufferStatus: UInt { case notEnqueued, enqueued, committed, scheduled, completed, error }

open class MTLCompileOptions: NSObject {
    open var fastMathEnabled: Bool = true
    public override init() {}
}

public protocol MTLFunction: NSObjectProtocol {}
public protocol MTLLibrary: NSObjectProtocol {
    func makeFunction(name functionName: String) -> MTLFunction?
}
public protocol MTLComputePipelineState: NSObjectProtocol {
    var maxTotalThreadsPerThreadgroup: Int { get }
    var threadExecutionWidth: Int { get }
}
public protocol MTLBuffer: NSObjectProtocol {
    var length: Int { get }
    func contents() -> UnsafeMutableRawPointer
}
public protocol MTLComputeCommandEncoder: NSObjectProtocol {
    func setComputePipelineState(_ state: MTLComputePipelineState)
    func setBuffer(_ buffer: MTLBuffer?, offset: Int, index: Int)
    func setBufferOffset(_ offset: Int, index: Int)
    func setBytes(_ bytes: UnsafeRawPointer, length: Int, index: Int)
    func dispatchThreadgroups(_ threadgroupsPerGrid: MTLSize, threadsPerThreadgroup: MTLSize)
    func endEncoding()
}
public protocol MTLCommandBuffer: NSObjectProtocol {
    var error: Error? { get }
    var status: MTLCommandBufferStatus { get }
    func makeComputeCommandEncoder() -> MTLComputeCommandEncoder?
    func commit()
    func waitUntilCompleted()
    func addCompletedHandler(_ block: @escaping @Sendable (MTLCommandBuffer) -> Void)
}
public protocol MTLCommandQueue: NSObjectProtocol {
    func makeCommandBuffer() -> MTLCommandBuffer?
}
public protocol MTLDevice: NSObjectProtocol {
    var name: String { get }
    var maxBufferLength: Int { get }
    var recommendedMaxWorkingSetSize: UInt64 { get }
    var currentAllocatedSize: Int { get }
    func supportsFamily(_ gpuFamily: MTLGPUFamily) -> Bool
    func makeCommandQueue() -> MTLCommandQueue?
    func makeLibrary(source: String, options: MTLCompileOptions?) throws -> MTLLibrary
    func makeComputePipelineState(function computeFunction: MTLFunction) throws -> MTLComputePipelineState
    func makeBuffer(length: Int, options: MTLResourceOptions) -> MTLBuffer?
    func makeBuffer(bytes pointer: UnsafeRawPointer, length: Int, options: MTLResourceOptions) -> MTLBuffer?
    func makeBuffer(bytesNoCopy pointer: UnsafeMutableRawPointer, length: Int, options: MTLResourceOptions,
                    deallocator: ((UnsafeMutableRawPointer, Int) -> Void)?) -> MTLBuffer?
}

public func MTLCreateSystemDefaultDevice() -> MTLDevice? { nil }
